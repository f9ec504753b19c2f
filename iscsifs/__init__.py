"""iscsifs: a userspace iSCSI initiator that mounts LUNs as regular files."""

__version__ = "0.1.0"
