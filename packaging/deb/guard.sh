# Live-system guard (packaging/deb/guard.sh, inlined into each maintainer
# script by scripts/build-packages.sh).  True only on a running
# systemd system whose root we are in: never in a chroot (an image build,
# where udevadm trigger would reach the BUILD machine's devices through a
# mounted /sys), never under dpkg --root, never without systemd.  Like udev's
# own postinst: / must be the root of PID 1 (test -ef: same device and
# inode); when /proc/1/root cannot be read (no /proc, no privileges) we count
# as chrooted.
gagent_live_system() {
    [ -z "${DPKG_ROOT:-}" ] || return 1
    [ -d /run/systemd/system ] || return 1
    # shellcheck disable=SC3013 # -ef: dash, bash and busybox sh all have it
    [ / -ef /proc/1/root ]
}
