"""The command line: argument parsing, the mount/ls/stats/discard/map commands, exit codes, the demo."""
