#!/usr/bin/env bash
# Set up a development checkout on Debian 12 and run it:
#   packaging/dev.sh serve [hoshikage serve flags...]   install, then run the daemon
#   packaging/dev.sh test  [pytest args...]             install, then run the whole test suite
#   packaging/dev.sh setup                              install only
# Installs Debian's build dependencies (with sudo when not root), a virtualenv
# in .venv built on Debian's /usr/bin/python3, and the pinned Python packages.
# llama-cpp-python compiles from source once, as a portable wheel that the .deb and
# the container image use too (packaging/llama-wheel.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev build-essential cmake pkg-config libsystemd-dev systemd)
# The tests also boot Debian 12 containers (systemd-container, debootstrap),
# build and check the .deb (debhelper, dh-virtualenv, dpkg-dev, lintian),
# build and run the container image (podman, podman-compose; runc, see
# tests/system/test_container_image.py), run the .deb on an older CPU (qemu-user), and put two
# daemons behind a load balancer (haproxy; tests/integration/test_scaling_out.py).
TEST_APT_PACKAGES=(systemd-container debootstrap util-linux debhelper dh-virtualenv dpkg-dev lintian
                   podman podman-compose runc iptables qemu-user haproxy)

install_apt_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}

install_python_packages() {
  [ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
  local stamp=.venv/.installed-$(cat packaging/requirements-dev.txt setup.cfg packaging/llama-wheel.sh |
                                 sha256sum | cut -c1-16)
  [ -e "$stamp" ] && return
  local wheels
  wheels=$(packaging/llama-wheel.sh)
  echo "installing Python packages into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  # Replaces a llama-cpp-python of the same version built another way (an older checkout's native build).
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl
  .venv/bin/pip install --quiet --disable-pip-version-check --find-links "$wheels" -r packaging/requirements-dev.txt
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  setup)
    install_apt_packages "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"; install_python_packages ;;
  serve)
    install_apt_packages "${APT_PACKAGES[@]}"; install_python_packages
    exec .venv/bin/hoshikage serve "$@" ;;
  test)
    install_apt_packages "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"; install_python_packages
    exec .venv/bin/python -m pytest "$@" ;;
  *)
    sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
