#!/usr/bin/env bash
# A stand-in for `apptainer` (no container runtime can be installed here): records each
# call in FAKE_APPTAINER_LOG, checks that `exec` got --bind and an existing image, and runs
# the command on the host, as `apptainer exec` runs it in the image.
echo "$*" >> "$FAKE_APPTAINER_LOG"
[ "$1" = exec ] || { echo "fake apptainer: only exec is supported, got $1" >&2; exit 64; }
shift
while [ $# -gt 0 ]; do
  case $1 in
    --bind|-B) shift 2;;
    -*) shift;;
    *) break;;
  esac
done
image=$1; shift
[ -f "$image" ] || { echo "fake apptainer: image $image does not exist" >&2; exit 255; }
exec "$@"
