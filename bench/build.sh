#!/bin/sh
# Build the bench's C programs into a directory outside git (default: out/bench-build):
#   testusb        host side, drives the kernel's usbtest driver   (linux tools/usb/testusb.c)
#   ffs-test       FunctionFS source/sink daemon, device side      (linux tools/usb/ffs-test.c)
#   aio_multibuff  FunctionFS AIO IN-only daemon, device side      (linux tools/usb/ffs-aio-example/
#                                                                    multibuff/device_app/aio_multibuff.c,
#                                                                    its completion bug patched: below)
#   host_bulk      our libusb benchmark, host side                 (bench/host_bulk.c)
#   ffs_aio_peer   our FunctionFS AIO source+sink, device side     (bench/ffs_aio_peer.c: the C
#                    limit, with gadgetd's sourcesink descriptors, request size and queue depth)
# The kernel programs come from Debian's linux-source-6.1 tarball: only the files they need are
# extracted, into BUILD/src (never into the repository).
#
# usage: bench/build.sh [BUILD_DIR]      (LINUX_SOURCE=path/to/linux-source-X.Y.tar.xz overrides)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../out/bench-build}
tarball=${LINUX_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
packages="gcc libc6-dev linux-libc-dev pkg-config libusb-1.0-0-dev libaio-dev linux-source-6.1 xz-utils patch"

missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ] || [ ! -f "$tarball" ]; then
    [ -z "$missing" ] || echo "bench/build.sh: missing Debian packages:$missing" >&2
    if [ ! -f "$tarball" ]; then
        echo "bench/build.sh: kernel source tarball not found: $tarball (package linux-source-6.1," \
             "or LINUX_SOURCE=path)" >&2
        case " $missing " in *" linux-source-6.1 "*) ;; *) missing="$missing linux-source-6.1" ;; esac
    fi
    echo "bench/build.sh: install them as root: apt-get install$missing" >&2
    exit 1
fi

mkdir -p "$build/src"
build=$(cd "$build" && pwd)
top=$(basename "$tarball" .tar.xz)          # linux-source-6.1
src=$build/src/$top
files="tools/usb/testusb.c
tools/usb/ffs-test.c
tools/usb/ffs-aio-example/multibuff/device_app/aio_multibuff.c
tools/include/tools/le_byteshift.h
include/uapi/linux/usb/functionfs.h"

stamp=$build/src/.extracted-$top
if [ ! -f "$stamp" ] || [ "$tarball" -nt "$stamp" ]; then
    echo "extracting from $tarball (decompresses the whole tarball: ~20 s)"
    members=$(for f in $files; do printf '%s/%s\n' "$top" "$f"; done)
    # shellcheck disable=SC2086
    tar -xJf "$tarball" -C "$build/src" $members
    touch "$stamp"
fi

# aio_multibuff initialises static descriptors with htole16/htole32, which glibc (>= 2.26)
# implements as inline functions, so the file does not compile as it is ("initializer element
# is not constant"). A forced include swaps in constant-expression macros (little-endian only).
mkdir -p "$build/src/compat"
cat > "$build/src/compat/endian_const.h" <<'H'
#include <endian.h>
#if __BYTE_ORDER != __LITTLE_ENDIAN
#error "endian_const.h: little-endian hosts only"
#endif
#undef htole16
#undef htole32
#define htole16(x) (x)
#define htole32(x) (x)
H

# aio_multibuff subtracts every completion from the buffer set it is waiting for, reaps at most
# 128 of them per eventfd wakeup and resubmits before reaping, so it stops submitting after 2 MiB
# (2 x 128 x 8 KiB) or when both sets complete between two wakeups.
# bench/aio_multibuff-reap.patch charges each completion to its own set, reaps all that the
# eventfd counted before resubmitting, and initialises `ready`; nothing else changes.
amb=tools/usb/ffs-aio-example/multibuff/device_app/aio_multibuff.c
patch -s -o "$build/src/aio_multibuff.c" "$src/$amb" "$here/aio_multibuff-reap.patch"

cc=${CC:-gcc}
cflags="-O2 -g -Wall -D_GNU_SOURCE"
set -x
$cc $cflags -o "$build/testusb" "$src/tools/usb/testusb.c" -lpthread
# ffs-test includes <tools/le_byteshift.h> and "../../include/uapi/linux/usb/functionfs.h"
$cc $cflags -I"$src/tools/include" -o "$build/ffs-test" "$src/tools/usb/ffs-test.c" -lpthread
$cc $cflags -include "$build/src/compat/endian_const.h" -o "$build/aio_multibuff" \
    "$build/src/aio_multibuff.c" -laio
# shellcheck disable=SC2046
$cc $cflags -Wextra -o "$build/host_bulk" "$here/host_bulk.c" $(pkg-config --cflags --libs libusb-1.0)
$cc $cflags -Wextra -o "$build/ffs_aio_peer" "$here/ffs_aio_peer.c" -laio
{ set +x; } 2>/dev/null
echo "built: $build/testusb $build/ffs-test $build/aio_multibuff $build/host_bulk $build/ffs_aio_peer"
