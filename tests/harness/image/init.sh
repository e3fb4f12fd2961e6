#!/bin/busybox sh
# /init of the gagent end-to-end test guest (built by tests/harness/image/build.py).
#
# Runs as PID 1 from the initramfs.  It brings up the bare minimum that
# qemu-ga needs (no udev, no systemd), starts the agent through the project's
# own sysvinit script, then stays PID 1: it reaps orphans and turns the
# halt/poweroff/reboot signals into a real power state change so that QEMU
# exits after guest-shutdown or `poweroff`.
#
# Kernel command line knobs:
#   gagent.hostname=NAME   hostname (default gagent-e2e)
#   gagent.ports=a,b       virtio-serial port names handed to gagent-qga
#   gagent.shell=1         also run a root shell on /dev/ttyS0 (debugging)
#   gagent.nodata=1        do not wait for / mount the /data disk
#   gagent.debug=1         log each boot step (with uptime) on the console
#   gagent.warm=0          do not warm python3 up in the background after boot

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export PYTHONPATH=/opt/gagent
umask 022

log() {
    read -r up _ </proc/uptime 2>/dev/null
    echo "gagent-e2e[${up:-?}]: $*" >/dev/console 2>/dev/null || echo "gagent-e2e: $*"
}
debug=0
step() { [ "$debug" = 0 ] || log "$@"; }

mkdir -p /proc /sys /dev /run /tmp /data
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
[ -e /dev/console ] || mknod -m 600 /dev/console c 5 1
exec </dev/null >/dev/console 2>&1

hostname=gagent-e2e
shell=0
nodata=0
warm=1
# shellcheck disable=SC2013 # the command line is a list of words
for word in $(cat /proc/cmdline); do
    case "$word" in
        gagent.hostname=?*) hostname=${word#gagent.hostname=} ;;
        gagent.shell=1) shell=1 ;;
        gagent.nodata=1) nodata=1 ;;
        gagent.debug=1) debug=1 ;;
        gagent.warm=0) warm=0 ;;
    esac
done
hostname "$hostname"
echo "$hostname" >/etc/hostname
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

# Kernel modules: lines "GROUP PATH", computed at build time from the
# modules' own .modinfo depends= fields (built-in ones are not listed).  Each
# group is in dependency order and independent of the others, so the groups
# load in parallel (the ext4 stack next to the virtio stack).
step "loading modules"
kver=$(uname -r)
load_group() {
    while read -r group mod; do
        [ "$group" = "$1" ] || continue
        insmod "/lib/modules/$kver/$mod" || log "insmod $mod failed"
        step "insmod $mod done"
    done </etc/gagent/modules
}
# shellcheck disable=SC2013 # group numbers, one word each
for group in $(cut -d' ' -f1 /etc/gagent/modules | sort -u); do
    load_group "$group" &
done
wait
step "modules loaded"

# The data disk: a real ext4 block device, because qemu-ga's fsfreeze skips
# rootfs/tmpfs and the tests need something freezable and listable.
if [ "$nodata" != 1 ]; then
    i=0
    while [ ! -b /dev/vda ] && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ -b /dev/vda ]; then
        mount -t ext4 -o noatime /dev/vda /data || log "mounting /dev/vda on /data failed"
        step "/data mounted"
    else
        log "no /dev/vda: /data stays on the initramfs"
    fi
fi

/etc/gagent/sysvinit/gagent-qga start || log "gagent-qga start failed"
log "ready"

# The first python3 of a TCG guest costs ~1.5 s more than the next ones
# (cold page/translation caches): pay it now, off the agent's critical path.
if [ "$warm" = 1 ]; then
    python3 -c 'import serial, json, base64, hashlib, socket, struct, subprocess' \
        >/dev/null 2>&1 &
fi

if [ "$shell" = 1 ] && [ -c /dev/ttyS0 ]; then
    setsid -c sh -c 'exec sh -l </dev/ttyS0 >/dev/ttyS0 2>&1' &
fi

going_down=0
down() {
    [ "$going_down" = 0 ] || return 0
    going_down=1
    log "going down: $1"
    /etc/gagent/sysvinit/gagent-qga stop
    sync
    umount /data 2>/dev/null || mount -o remount,ro /data 2>/dev/null
    sync
    case "$1" in
        reboot) reboot -f ;;
        halt) halt -f ;;
        *) poweroff -f ;;
    esac
}

# busybox halt/poweroff/reboot (without -f) signal PID 1 with USR1/USR2/TERM;
# /sbin/shutdown (the shim qemu-ga runs for guest-shutdown) does the same.
trap 'down halt' USR1
trap 'down poweroff' USR2
trap 'down reboot' TERM
trap '' INT HUP

# Stay PID 1.  `wait` ends up in waitpid(-1), so every exiting child,
# including re-parented orphans such as the daemonized qemu-ga, is reaped
# here; trapped signals interrupt `wait` at once.
while :; do
    sleep 60 &
    wait $!
done
