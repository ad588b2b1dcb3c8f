#!/usr/bin/env bash
# System libraries the test suite needs (Debian/Ubuntu names): Qt offscreen (libEGL, libGL,
# fontconfig, xkbcommon, dbus), the OpenFX plugin (g++, CMake, pkg-config, libzmq, cppzmq,
# msgpack-cxx; nm from binutils for its exports test), and systemd-analyze for the
# installer's unit check. Installs what is missing when it can (root or passwordless sudo);
# otherwise prints the apt-get line and goes on (tests that need a missing tool say so).
set -uo pipefail
PACKAGES=(libegl1 libgl1 libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev g++ make cmake pkg-config binutils systemd)
command -v dpkg-query >/dev/null 2>&1 || exit 0  # not Debian: nothing we know how to check
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "missing system packages: sudo apt-get install ${missing[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || \
  echo "could not install: ${missing[*]}" >&2
