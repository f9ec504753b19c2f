"""Where log lines go, so that none is silently dropped.

In the foreground (``-f``, and a background mount until it is live) they go to stderr, with
journald priorities when stderr is the journal (sd-daemon(3)). Once a mount runs in the
background they go, in this order of choice, to ``-o log_file=PATH``; to the journal, when
systemd gave us its stream as stderr; to syslog, when ``/dev/log`` exists; else to a default
file (``/var/log/iscsifs.log`` for root, ``~/.local/state/iscsifs.log`` otherwise), which the
mount names on stderr before it goes to the background. Whichever it is, it is opened before
the command forks, as the user who started it: with ``-o setuid`` the daemon keeps writing to the
file it opened, which stays its owner's. A log file is reopened on SIGHUP, for logrotate.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

FILE_FORMAT = "%(asctime)s iscsifs[%(process)d]: %(levelname)s: %(message)s"


class JournalFormatter(logging.Formatter):
    """On journald's stream (systemd service), prefix each line with its syslog priority "<N>"
    so `journalctl -p warning` works (sd-daemon(3))."""

    PRIORITY: ClassVar[dict[int, int]] = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                                          logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>" + super().format(record)


class ReopeningFileHandler(logging.FileHandler):
    """A log file that ``reopen`` opens again by name (after logrotate moved it away)."""

    def reopen(self) -> None:
        """The file by its name again; if it cannot be opened (gone with its directory, or not
        ours to open since -o setuid: logrotate's ``create MODE USER GROUP`` or ``copytruncate``
        suit that), the old one is kept."""
        self.acquire()
        try:
            try:
                stream = self._open()
            except OSError as exc:
                print(f"iscsifs: cannot reopen {self.baseFilename}: {exc.strerror or exc}; still writing to the "
                      "file open before", file=self.stream or sys.stderr)
                return
            if self.stream is not None:
                self.stream.close()
            self.stream = stream
        finally:
            self.release()


def stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def _level(debug: bool) -> int:
    return logging.DEBUG if debug else logging.INFO


def setup(debug: bool) -> None:
    """stderr, with the journal's priorities on the journal stream."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(name)s: %(levelname)s: %(message)s" if debug else "iscsifs: %(message)s"
    handler.setFormatter(JournalFormatter(fmt) if stderr_is_journal() else logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_level(debug))
    logging.getLogger("iscsifs.block").setLevel(_level(debug))


def _file_handler(path: str) -> ReopeningFileHandler:
    handler = ReopeningFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    return handler


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a background mount's log lines go: "file" (``path``), "journal" or "syslog"."""

    kind: str
    path: str | None = None
    default: bool = False  # a file chosen because there is neither journal nor syslog

    def __str__(self) -> str:
        return self.path or self.kind


def default_log_file() -> Path:
    if os.geteuid() == 0:
        return Path("/var/log/iscsifs.log")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "iscsifs.log"


def background_destination(log_file: str | None) -> Destination:
    if log_file is not None:
        return Destination("file", os.path.abspath(log_file))
    if stderr_is_journal():
        return Destination("journal")
    if os.path.exists("/dev/log"):
        return Destination("syslog")
    return Destination("file", str(default_log_file()), default=True)


def open_destination(destination: Destination) -> logging.Handler | None:
    """The handler of a background mount's log lines, opened now: before the command forks and
    before ``-o setuid`` drops privileges. A log file that cannot be opened is then an error the
    command still reports (not lines lost once it has said "mounted"), and the open file outlives
    the drop, as a root-owned file in /var/log must. None for the journal (stderr is kept).
    Raises OSError."""
    if destination.kind == "journal":
        return None
    if destination.kind == "syslog":
        handler: logging.Handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("iscsifs[%(process)d]: %(message)s"))
        return handler
    assert destination.path is not None
    directory = Path(destination.path).parent
    if not directory.exists():  # a regular file there is left for open() to name: "not a directory"
        directory.mkdir(parents=True, exist_ok=True)
    return _file_handler(destination.path)


def to_background(handler: logging.Handler | None) -> None:
    """Once the daemon's stdio is gone: its log lines go to ``handler`` (``open_destination``'s;
    None: the journal, whose stream stayed as stderr)."""
    if handler is not None:
        logging.getLogger().handlers[:] = [handler]


def also_to(handler: logging.Handler) -> None:
    """A log file beside stderr (a foreground mount given -o log_file=)."""
    logging.getLogger().addHandler(handler)


def reopen() -> None:
    """SIGHUP: every log file is opened again by name."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
