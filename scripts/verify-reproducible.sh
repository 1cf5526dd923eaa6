#!/usr/bin/env bash
# Builds the worker kernel and initramfs twice, each from an empty cache in
# its own folder, and compares the bytes. Usage: verify-reproducible.sh ARCH KVERSION
set -euo pipefail
arch=${1:-x86}
kversion=${2:-6.1}
work=$(mktemp -d /tmp/mf-repro-XXXXXX)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
for i in 1 2; do
  echo "== build $i (empty cache $work/cache$i)"
  if [ "$i" = 2 ]; then
    # The same resolved source for both builds, whichever version the first
    # resolved (the pin, or a fallback if Debian dropped it): only the
    # verified source files are shared, no build output.
    mkdir -p "$work/cache2" && cp -a "$work/cache1/sources" "$work/cache2/"
  fi
  # A fresh Go build cache too, so mfinit is compiled from scratch each time.
  GOCACHE="$work/gocache$i" bin/mfbuild worker --arch "$arch" --version "$kversion" --cache "$work/cache$i" --out "$work/out$i"
  if [ "$arch" = arm ]; then
    # The BeagleBone's bootloader too: MLO and u-boot.img.
    bin/mfbuild uboot --cache "$work/cache$i" --out "$work/out$i/u-boot"
  fi
done
status=0
for f in $(cd "$work/out1" && find . -type f | sort); do
  f=${f#./}
  [ "$f" = "initramfs.cpio.json" ] && continue
  a=$(sha256sum "$work/out1/$f" | cut -d' ' -f1)
  b=$(sha256sum "$work/out2/$f" | cut -d' ' -f1)
  if [ "$a" = "$b" ]; then
    echo "identical  $f  $a"
  else
    echo "DIFFERENT  $f  $a != $b"
    status=1
  fi
done
exit $status
