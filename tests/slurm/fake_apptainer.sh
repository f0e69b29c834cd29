#!/usr/bin/env bash
# A stand-in for `apptainer` (no container runtime can be installed here): records each
# call in FAKE_APPTAINER_LOG, checks that `exec` got --bind and an existing image, and runs
# the command on the host, as `apptainer exec` runs it in the image. Environment as
# Apptainer documents it: APPTAINERENV_X becomes X inside; --cleanenv/-e and
# --containall/-C start from an empty environment (only PATH, HOME, the test's FAKE_*
# plumbing and the APPTAINERENV_ variables are kept).
echo "$*" >> "$FAKE_APPTAINER_LOG"
[ "$1" = exec ] || { echo "fake apptainer: only exec is supported, got $1" >&2; exit 64; }
shift
clean=0
while [ $# -gt 0 ]; do
  case $1 in
    --bind|-B) shift 2;;
    --cleanenv|-e|--containall|-C) clean=1; shift;;
    -*) shift;;
    *) break;;
  esac
done
image=$1; shift
[ -f "$image" ] || { echo "fake apptainer: image $image does not exist" >&2; exit 255; }
inside=()
for name in $(compgen -e); do
  case $name in
    APPTAINERENV_*) inside+=("${name#APPTAINERENV_}=${!name}");;
    PATH|HOME|FAKE_*) inside+=("$name=${!name}");;
    *) [ "$clean" = 1 ] || inside+=("$name=${!name}");;
  esac
done
exec env -i "${inside[@]}" "$@"
