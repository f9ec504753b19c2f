"""The block layer over the iSCSI sessions: a LUN addressed in bytes, the SCSI command policy, byte
ranges and locks, discovery and scanning, statistics, and a synchronous API."""
