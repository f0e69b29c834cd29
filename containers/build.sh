#!/usr/bin/env bash
# Builds the ba3c Apptainer images: the shared base first, then one image per service.
#
#   containers/build.sh                 # base + paramserver learner simulator evaluator
#   containers/build.sh learner         # one service (and the base, if it is missing)
#   containers/build.sh base            # only the base (rebuild it after changing ba3c/)
#
# Run from anywhere; it builds from the repository root (the definitions' %files paths are
# relative to it). Images go to BA3C_IMAGES (default: containers/), where slurm/hetjob.sh
# looks for them; the base is always containers/base.sif (the services start From it).
#   APPTAINER         apptainer or singularity (default: whichever is on PATH)
#   BUILD_ARGS        extra build options; default --fakeroot when not root
#                     (e.g. BUILD_ARGS="" on a build node where you are root)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=(paramserver learner simulator evaluator)
out=${BA3C_IMAGES:-containers}
runtime=${APPTAINER:-$(command -v apptainer || command -v singularity || true)}
[ -n "$runtime" ] || { echo "build.sh: neither apptainer nor singularity is on PATH" >&2; exit 2; }
if [ -z "${BUILD_ARGS+x}" ]; then
  if [ "$(id -u)" = 0 ]; then BUILD_ARGS=""; else BUILD_ARGS="--fakeroot"; fi
fi
read -ra build_args <<< "$BUILD_ARGS"

build() {  # build NAME OUTPUT: (re)builds it
  echo "build.sh: building $2 from containers/$1.def"
  "$runtime" build "${build_args[@]}" --force "$2" "containers/$1.def"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(base "${SERVICES[@]}")
for t in "${targets[@]}"; do
  [ -f "containers/$t.def" ] || { echo "build.sh: no containers/$t.def" \
    "(one of: base ${SERVICES[*]})" >&2; exit 2; }
done
mkdir -p "$out"
for t in "${targets[@]}"; do
  if [ "$t" = base ]; then
    build base containers/base.sif
  else
    [ -e containers/base.sif ] || build base containers/base.sif
    build "$t" "$out/$t.sif"
  fi
done
