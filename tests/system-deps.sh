#!/usr/bin/env bash
# Installs the Debian packages the tests need (Slurm, munge, Prometheus, Node.js for
# examples/node-pool), when run as root on Debian and they are missing. Elsewhere it only
# says what the tests will miss.
set -euo pipefail
packages=(slurm-wlm munge prometheus iproute2 util-linux)   # filled in as test suites that need system packages land
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Node.js by its commands: any install will do (NodeSource's nodejs bundles npm, and
# Debian's npm package would conflict with it).
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "not root on Debian: cannot install ${missing[*]}; tests that need them will fail" >&2
fi
