#!/bin/sh
# The guest's kernel-command-line.service (systemd.run=): mount the --rwdir shares
# ($GADGETD_RWDIRS, 9p tags virtme.initmount0, 1, ... in that order; one is the run's result
# directory) at their host paths, wait for basic.target (udev, journald; not
# multi-user.target, which would start the machine's own services), run cmd.sh with its output
# in log; systemd powers the guest off when this exits.
n=0
IFS=:
for dir in $GADGETD_RWDIRS; do
    mkdir -p "$dir"
    mount -t 9p -o trans=virtio,version=9p2000.L,access=any,msize=524288 \
        "virtme.initmount$n" "$dir" || exit 99
    n=$((n + 1))
done
unset IFS
systemctl start basic.target || echo "gadgetd-guest: basic.target did not start" \
    >> "$GADGETD_RESULT/log"
cd "$GADGETD_CWD" || exit 98
/bin/sh "$GADGETD_RESULT/cmd.sh" >> "$GADGETD_RESULT/log" 2>&1 < /dev/null
rc=$?
sync
exit $rc
