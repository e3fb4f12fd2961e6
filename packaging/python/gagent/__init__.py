"""gagent, guest subset: only ``gagent.guest`` is installed here.

The gagent-guest packages (.deb, .rpm) install this file and the guest helper
(``gagent.guest``) for the guest's system python (3.9 or newer).  The host
side (the trio client, libvirt code, the ``gagent`` command) is not part of
them: install the full ``gagent`` project for that.  A full installation
shadows this one (it comes first on sys.path) and has ``gagent.guest`` too.
"""

__version__ = "0.1.0"
