"""A session worker as a process: started on this thread, awaited on a pidfd, reaped (the
supervision of ``net.workers`` and the requests of ``net.exchange`` are built on it)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import trio


class Child:
    """A worker process, started on this thread. (trio's open_process starts it on a thread of its
    cache, and a thread still there when ``-o setuid`` drops capabilities would keep them:
    capset(2) is per thread.) Its exit is awaited on a pidfd."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._watching: trio.Event | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except OSError:  # a kernel before 5.3: poll
            self._pidfd = None

    @classmethod
    def start(cls, argv: list[str], **kwargs: Any) -> Child:
        return cls(subprocess.Popen(argv, **kwargs))

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """Until it has exited (several tasks may wait: one watches the pidfd)."""
        if self._watching is not None:
            await self._watching.wait()
        else:
            self._watching = trio.Event()
            try:
                while self._popen.poll() is None:
                    if self._pidfd is not None:
                        await trio.lowlevel.wait_readable(self._pidfd)
                    else:
                        await trio.sleep(0.05)
            finally:
                watching, self._watching = self._watching, None
                watching.set()
        code = self._popen.poll()
        if code is None:
            return await self.wait()  # the watcher was cancelled: watch in its place
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return code

    def kill(self) -> None:
        if self._popen.returncode is None:
            self._popen.kill()


async def reap(process: Child, timeout: float) -> None:
    """Wait for a worker whose channel is closed to exit, as it does on its own; kill it after
    ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


def how_it_ended(returncode: int | None) -> str:
    if returncode is None:
        return "still running, channel closed"
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
