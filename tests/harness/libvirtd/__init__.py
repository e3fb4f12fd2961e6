"""Private libvirtd (QEMU driver, TCG) for tests: see daemon.py."""

from .daemon import LibvirtDaemon, LibvirtdError, running_libvirtd

__all__ = ["LibvirtDaemon", "LibvirtdError", "running_libvirtd"]
