#!/usr/bin/env bash
# Set up gagent on a fresh Debian 12 machine (run as root): system packages,
# a virtualenv in .venv, and the package itself (editable) with every extra.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
  # building the venv and libvirt-python
  python3 python3-venv python3-dev gcc pkg-config libvirt-dev
  # the real peer: qemu-ga (started on the host with dangerous RPCs blocked)
  qemu-guest-agent
  # libvirt: clients (virsh, virt-xml-validate), a daemon with the QEMU driver
  libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu
  # virt-xml-validate (the golden XML tests) runs xmllint: only a Recommends of libvirt-clients
  libxml2-utils
  # the real-guest harness: QEMU (TCG), image tools, initramfs ingredients
  qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs xz-utils zstd
  # the systemd guest (stock Debian with our .deb installed) is debootstrapped
  debootstrap
  # guest packages (.deb/.rpm) and their lint
  dpkg-dev rpm lintian shellcheck
  # the shared inventory store's tests run a real PostgreSQL server
  postgresql
  # the exporter's e2e tests scrape it with a real Prometheus server
  prometheus
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[host,guest,postgresql,exporter,dev]'
echo "gagent set up: $(.venv/bin/gagent --version)"
