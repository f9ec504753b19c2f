"""Sans-I/O SCSI codec (SPC-4/SBC-3): CDB builders, response parsers, sense decoding."""
