#!/bin/busybox sh
# /init of the stage-1 initramfs of gagent's systemd e2e guest (built by
# tests/harness/image/systemd_image.py).  Busybox only: load the modules the
# root disk needs (listed in /modules, dependencies first), mount the first
# virtio disk read-write and hand PID 1 over to the guest's own systemd.
# Nothing else: udev and systemd in the real root do the rest (virtio_console
# included), as they would on any Debian guest.
bb=/bin/busybox
$bb mkdir -p /proc /dev /newroot
$bb mount -t proc proc /proc
$bb mount -t devtmpfs devtmpfs /dev

while read -r mod; do
    $bb insmod "/lib/modules/$mod" || echo "stage1: insmod $mod failed"
done </modules

root=/dev/vda
tries=0
while [ ! -b "$root" ] && [ "$tries" -lt 200 ]; do
    $bb usleep 50000
    tries=$((tries + 1))
done
if ! $bb mount -t ext4 -o rw,noatime "$root" /newroot; then
    echo "stage1: cannot mount $root (after $tries waits); giving up"
    exit 1 # PID 1 exits: the kernel panics, panic=-1 reboots, -no-reboot ends QEMU
fi
# systemd takes over the mounts it finds (as after any initramfs)
$bb mount --move /dev /newroot/dev
$bb mount --move /proc /newroot/proc
exec $bb switch_root -c /dev/console /newroot /sbin/init "$@"
