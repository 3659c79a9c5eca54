#!/usr/bin/env bash
# Build hoshikage_<version>_<arch>.deb into dist/:
#   packaging/build-deb.sh
# Installs the build dependencies (Debian 12), then dpkg-buildpackage -us -uc -b.
# The Python dependencies are bundled by dh-virtualenv from
# packaging/requirements-daemon.txt; pip's cache keeps the compiled
# llama-cpp-python wheel, so only the first build compiles it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DEPS=(debhelper dh-virtualenv python3 python3-venv python3-dev build-essential cmake pkg-config
            libsystemd-dev dpkg-dev)
missing=()
for package in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
dpkg-buildpackage -us -uc -b
mkdir -p dist
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -q DEB_HOST_ARCH)
mv "../hoshikage_${version}_${arch}.deb" dist/
rm -f "../hoshikage_${version}_${arch}.buildinfo" "../hoshikage_${version}_${arch}.changes" \
      "../hoshikage-dbgsym_${version}_${arch}.deb"
echo "dist/hoshikage_${version}_${arch}.deb"
