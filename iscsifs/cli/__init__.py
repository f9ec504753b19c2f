"""The command line: argument parsing, the mount/ls/stats/discard/map commands, exit codes, the demo.
``main`` is the console script's entry point (``iscsifs.cli:main``)."""

from iscsifs.cli.commands import main

__all__ = ["main"]
