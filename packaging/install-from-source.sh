#!/bin/sh
# Install Hoshikage from this source tree onto a systemd machine, as root:
#   packaging/install-from-source.sh                 # pip fetches what it needs
#   packaging/install-from-source.sh --wheels DIR    # offline, from prebuilt wheels
# Puts the package in a virtualenv (/opt/hoshikage/venv, or $HOSHIKAGE_VENV)
# on Debian's python3, then the system integration: units, the RAM-disk
# generator, the system user, /usr/bin/hoshikage and a default config (never
# overwriting one an admin already has). Does not start anything.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
venv=${HOSHIKAGE_VENV:-/opt/hoshikage/venv}
wheels=
[ "${1:-}" = "--wheels" ] && wheels=$2

# Without ensurepip, which fails inside freshly booted containers here; pip
# comes from Debian's own wheel (python3-venv depends on it) instead.
/usr/bin/python3 -m venv --without-pip "$venv"
pip_wheel=$(ls /usr/share/python-wheels/pip-*.whl | head -n 1)
pip() { "$venv/bin/python" "$pip_wheel/pip" install --quiet --disable-pip-version-check "$@"; }
if [ -n "$wheels" ]; then
  pip --no-index --find-links "$wheels" hoshikage
else
  pip "$src"
fi

units=/usr/lib/systemd/system
install -D -m 0644 "$src/systemd/hoshikage.socket" "$units/hoshikage.socket"
install -D -m 0644 "$src/systemd/hoshikage.service" "$units/hoshikage.service"
install -D -m 0644 "$src/systemd/hoshikage-ramdisk.service" "$units/hoshikage-ramdisk.service"
install -D -m 0644 "$src/systemd/hoshikage.sysusers" /usr/lib/sysusers.d/hoshikage.conf
install -D -m 0644 "$src/systemd/hoshikage.tmpfiles" /usr/lib/tmpfiles.d/hoshikage.conf
install -d /usr/lib/systemd/system-generators
ln -sf "$venv/bin/hoshikage-ramdisk-generator" /usr/lib/systemd/system-generators/hoshikage-ramdisk-generator
ln -sf "$venv/bin/hoshikage" /usr/bin/hoshikage
install -D -m 0644 "$src/docs/hoshikage.1" /usr/share/man/man1/hoshikage.1
install -D -m 0644 "$src/docs/hoshikage.yaml.5" /usr/share/man/man5/hoshikage.yaml.5
gzip -9nf /usr/share/man/man1/hoshikage.1 /usr/share/man/man5/hoshikage.yaml.5
if [ ! -e /etc/hoshikage/hoshikage.yaml ]; then
  install -D -m 0644 "$src/etc/hoshikage/hoshikage.yaml" /etc/hoshikage/hoshikage.yaml
fi
systemd-sysusers
systemd-tmpfiles --create hoshikage.conf
systemctl daemon-reload
