"""Host side: libvirt connection, channel XML, inventory, snapshots, migration checks."""
