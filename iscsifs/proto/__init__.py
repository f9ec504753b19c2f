"""Sans-I/O iSCSI protocol core (RFC 7143): bytes in, events out. Never imports trio."""
