#!/usr/bin/env bash
# Installs the Debian packages MicroFaaS builds and tests need, only those
# missing. Works as root or through sudo.
# Usage: scripts/install-deps.sh [--demo]
#   --demo  only what `make demo` needs: an x86 kernel build, its sources by
#           provenance, and QEMU (no ARM toolchain, services or browser)
set -euo pipefail

demo_packages=(
  build-essential flex bison bc libelf-dev libssl-dev lz4 cpio xz-utils patch
  debian-archive-keyring apt-utils gnupg dpkg-dev
  qemu-system-x86
)

packages=(
  # kernel builds
  build-essential flex bison bc libelf-dev libssl-dev lz4 cpio xz-utils patch
  # sources by provenance: apt with a private configuration checks Debian's
  # signatures (debian-archive-keyring); dpkg-deb unpacks the pinned .deb; the
  # source tests sign a local archive (gnupg, apt-ftparchive from apt-utils)
  debian-archive-keyring apt-utils gnupg dpkg-dev
  # ARM cross builds and BeagleBone images
  gcc-arm-linux-gnueabihf u-boot-tools device-tree-compiler dosfstools mtools
  # booting workers
  qemu-system-x86 qemu-system-arm
  # services the workload suite's tests run against
  redis-server postgresql
  # shell user functions get a static busybox as /bin/sh
  busybox-static
  # the python image of the run-time deploy tests (internal/testfn) copies the
  # host's python3 and its libraries
  python3
  # the experiment report's browser test (headless)
  chromium
  # the report is checked in two fonts: DejaVu Sans (fresh Debian's sans-serif) and
  # Liberation Sans (Arial's metrics)
  fonts-dejavu-core fonts-liberation
)

case "${1:-}" in
  --demo) packages=("${demo_packages[@]}") ;;
  "") ;;
  *) echo "install-deps.sh: unknown argument $1 (usage: scripts/install-deps.sh [--demo])" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "deps: missing ${missing[*]}; run this script as root or install sudo" >&2
    exit 1
  fi
  sudo="sudo"
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
