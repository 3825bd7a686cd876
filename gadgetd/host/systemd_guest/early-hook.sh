#!/bin/sh
# Runs as PID 1's child right before systemd, on the machine's root shared read-only over 9p.
# It fixes what keeps the machine's own systemd from booting there:
#  - no /lib/modules on the host and a read-only root: virtme's mkdir would fail and PID 1 exit;
#  - the host's /.dockerenv makes systemd believe it runs in a container and ignore the kernel
#    command line (systemd.run=, systemd.setenv=);
#  - systemd-tmpfiles would crawl the host's /tmp over 9p for minutes.
# New root: an overlay (host / below, guest RAM above, /.dockerenv whited out), entered with
# pivot_root; fresh /run and /tmp. Writes stay in the guest.
set -e
mount -t proc proc /proc 2>/dev/null || true
S=/srv
mount -t tmpfs -o mode=755 gadgetd-root "$S"
/bin/mkdir -p "$S/upper" "$S/work" "$S/root"
mknod "$S/upper/.dockerenv" c 0 0
mount -t overlay -o "lowerdir=/,upperdir=$S/upper,workdir=$S/work" overlay "$S/root"
/bin/mkdir -p "$S/root/.oldroot"
cd "$S/root"
pivot_root . .oldroot
cd /
mount --move /.oldroot/proc /proc
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
# A checkout or venv under the host's /tmp (gadgetd-hil vm passes them) stays visible.
IFS=:
for d in ${GADGETD_TMP_DIRS:-}; do
    /bin/mkdir -p "$d"
    mount --rbind "/.oldroot$d" "$d"
done
unset IFS
umount -l /.oldroot
rmdir /.oldroot
: > /etc/fstab
/bin/mkdir -p /lib/modules
: > /run/gadgetd-early-done
