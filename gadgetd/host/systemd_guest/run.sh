#!/bin/sh
# The guest's kernel-command-line.service (systemd.run=): mount the run's result directory (the
# first --rwdir, 9p tag virtme.initmount0) at its host path, wait for basic.target (udev,
# journald; not multi-user.target, which would start the machine's own services), run
# cmd.sh there with its output in log; systemd powers the guest off when this exits.
mkdir -p "$GADGETD_RESULT"
mount -t 9p -o trans=virtio,version=9p2000.L,access=any,msize=524288 virtme.initmount0 \
    "$GADGETD_RESULT" || exit 99
systemctl start basic.target || echo "gadgetd-guest: basic.target did not start" \
    >> "$GADGETD_RESULT/log"
cd "$GADGETD_CWD" || exit 98
/bin/sh "$GADGETD_RESULT/cmd.sh" >> "$GADGETD_RESULT/log" 2>&1 < /dev/null
rc=$?
sync
exit $rc
