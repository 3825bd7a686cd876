#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2317  # scripts for the chroot are single-quoted; trap handler
# Run the unit tests (`pytest tests`) on 32-bit ARM: a Debian bookworm armel root made with
# debootstrap, run under qemu-user (binfmt_misc) with the Pi Zero's CPU (ARM1176, ARMv6).
#
#   scripts/armel-tests.sh [CACHE_DIR] [PYTEST_ARGS...]
#
# CACHE_DIR (default ~/.cache/gadgetd/armel; "" for the default) keeps the root between runs:
# the first run builds it (debootstrap, then a venv with the project's dependencies from PyPI),
# later runs reuse it and only copy the work tree in (tracked and untracked, not ignored files).
# Needs root, and on the host: apt-get install debootstrap qemu-user-static binfmt-support
# (installed here when missing). The Debian mirror is the host's, read from its apt sources,
# or $MIRROR. $QEMU_CPU overrides the emulated CPU. Exits with pytest's status.
set -euo pipefail

HOST_PACKAGES=(debootstrap qemu-user-static binfmt-support)
SUITE=bookworm
# Debian packages in the armel root. systemd and procps: test_service runs systemd-analyze verify,
# which wants ExecReload's /bin/kill. hypothesis and tomli-w are imported when pytest collects
# tests/vm (deselected); PyPI's newest hypothesis has no armel wheel and builds with Rust.
# umtp-responder: the shipped mtp.toml names its umtprd (test_shipped_templates_are_valid).
ROOT_PACKAGES=python3,python3-venv,python3-hypothesis,python3-tomli-w,libaio1,libusb-1.0-0,systemd,procps,ca-certificates,umtp-responder
PIP_EXTRA=("pytest>=8" "python-debian>=0.1.49" "packaging>=23")  # for tests: pytest, test_kernels (host side), test_dependencies
RECIPE="1 $SUITE armel minbase $ROOT_PACKAGES"  # bump the leading number to force a rebuild

REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
CACHE=${1:-$HOME/.cache/gadgetd/armel}
shift || true
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
ROOT=$CACHE/root
export QEMU_CPU=${QEMU_CPU:-arm1176}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'armel-tests: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, binfmt_misc)"

exec 9>"$CACHE/lock"
flock 9

missing=()
for p in "${HOST_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing host packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# qemu-user-static registers qemu-arm with the F flag: chroots need no copy of the emulator.
mountpoint -q /proc/sys/fs/binfmt_misc \
  || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
  || die "cannot mount binfmt_misc (a container without it cannot run foreign binaries)"
[ -e /proc/sys/fs/binfmt_misc/qemu-arm ] || update-binfmts --enable qemu-arm
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-arm || die "binfmt qemu-arm is not enabled"

mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local m=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || die "no Debian mirror in the host's apt sources; set MIRROR"
  echo "$m"
}

MOUNTED=()
unmount_all() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[i]}" || true; done
  MOUNTED=()
}
trap unmount_all EXIT
mount_root() {  # proc, sys and dev for the chroot; lazily unmounted on exit
  local r=$1
  mount -t proc proc "$r/proc"; MOUNTED+=("$r/proc")
  mount -t sysfs sysfs "$r/sys"; MOUNTED+=("$r/sys")
  mount --bind /dev "$r/dev"; MOUNTED+=("$r/dev")
}
remove_tree() {  # never through a mount point
  local d=$1
  [ -e "$d" ] || return 0
  if grep -qE " ${d}(/| )" /proc/self/mountinfo; then die "$d still has mounts under it"; fi
  rm -rf --one-file-system "$d"
}
in_root() {  # in_root SCRIPT [ARGS...]: sh -c SCRIPT inside the root, clean environment
  local pass=() v
  for v in http_proxy https_proxy no_proxy PIP_INDEX_URL; do
    [ -n "${!v:-}" ] && pass+=("$v=${!v}")
  done
  chroot "$ROOT" /usr/bin/env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" "${pass[@]}" /bin/sh -c "$1" sh "${@:2}"
}

# 1. The Debian root (debootstrap), rebuilt only when the recipe changes.
if [ "$(cat "$ROOT/.armel-recipe" 2>/dev/null)" != "$RECIPE" ]; then
  start=$SECONDS
  remove_tree "$ROOT"
  remove_tree "$ROOT.new"
  MIRROR_URL=$(mirror)
  log "debootstrap $SUITE armel (minbase) from the host's mirror, with: $ROOT_PACKAGES"
  debootstrap --arch=armel --variant=minbase --include="$ROOT_PACKAGES" \
    "$SUITE" "$ROOT.new" "$MIRROR_URL" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  # Locally added CAs (e.g. a TLS-inspecting proxy) so that pip inside trusts what the host trusts.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    log "trusting the host's local CAs:" /usr/local/share/ca-certificates/*.crt
    cp /usr/local/share/ca-certificates/*.crt "$ROOT.new/usr/local/share/ca-certificates/"
    chroot "$ROOT.new" update-ca-certificates >/dev/null
  fi
  echo "$RECIPE" >"$ROOT.new/.armel-recipe"
  mv "$ROOT.new" "$ROOT"
  log "root built in $((SECONDS - start)) s"
fi

mount_root "$ROOT"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# 2. This work tree at /opt/gadgetd, fresh every run.
remove_tree "$ROOT/opt/gadgetd"
mkdir -p "$ROOT/opt/gadgetd"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
   | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$ROOT/opt/gadgetd"
dirty=$(git -C "$REPO" status --porcelain | wc -l)
log "source: $(git -C "$REPO" rev-parse --short HEAD) plus $dirty uncommitted change(s)"

# 3. The venv: the project's dependencies from PyPI, gadgetd installed editable (its console script
#    is what the rendered systemd unit names). Redone when pyproject.toml changes.
VENV_KEY=$(cat "$REPO/pyproject.toml" <(printf '%s\n' "${PIP_EXTRA[@]}") | sha256sum | cut -c1-16)
if [ "$(cat "$ROOT/opt/venv/.key" 2>/dev/null)" != "$VENV_KEY" ]; then
  start=$SECONDS
  mapfile -t deps < <(in_root 'python3 -c "$1" /opt/gadgetd/pyproject.toml' \
    'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"], sep="\n")')
  log "pip install into /opt/venv: ${deps[*]} ${PIP_EXTRA[*]}, then gadgetd (editable)"
  remove_tree "$ROOT/opt/venv"
  in_root 'python3 -m venv --system-site-packages /opt/venv \
    && pip install -q --no-cache-dir --disable-pip-version-check "$@" \
    && pip install -q --no-cache-dir --disable-pip-version-check --no-deps -e /opt/gadgetd' \
    "${deps[@]}" "${PIP_EXTRA[@]}" || die "pip install in the armel root failed"
  echo "$VENV_KEY" >"$ROOT/opt/venv/.key"
  log "installed: $(in_root 'pip list --format=freeze --disable-pip-version-check --local 2>/dev/null' | tr '\n' ' ')"
  log "venv built in $((SECONDS - start)) s"
fi

# 4. The tests.
log "pytest tests${*:+ $*} (QEMU_CPU=$QEMU_CPU, $(in_root 'echo "$(uname -m), $(python -V)"'))"
status=0
in_root 'cd /opt/gadgetd && exec python -m pytest tests "$@"' "$@" || status=$?
exit "$status"
