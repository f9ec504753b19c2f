"""Tape drives and medium changers as files of the mount, beside the disks: the state the FUSE
handlers (``fs.py``, which alone turns failures into errnos) keep for each.

A drive's file is Linux st's non-rewinding device (``/dev/nst0``) over ``block.tape.TapeDrive``,
one per drive LUN for the mount's life: the position is tracked there (tgt's READ POSITION
answers zeros), so a drive is never reached through two objects. One write(2) is one block and
one read(2) one block of its real length; the file is opened ``direct_io`` so that the kernel
passes each request on as it came, neither cached nor merged, and the largest block is what one
FUSE write request carries (the kernel splits a larger write(2) into several, each a block).

A changer's file reads as ``mtx -f FILE status`` prints its library, generated at open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from iscsifs.block.changer import Changer
from iscsifs.block.tape import TapeDrive
from iscsifs.scsi.smc import mtx_status_text


@dataclass(slots=True, eq=False)
class TapeFile:
    """A drive's file. As st, one opener at a time (``open``); its requests still take ``lock``
    in turn: a process may issue several at once, and the drive is not for concurrent use."""

    drive: TapeDrive
    lock: trio.Lock = field(default_factory=trio.Lock)
    open: bool = False
    released: trio.Event = field(default_factory=trio.Event)  # set when the opener's release is done


@dataclass(slots=True, eq=False)
class ChangerFile:
    """A changer's file: each open reads the library's status once, as mtx's text."""

    changer: Changer

    async def status_text(self, device: str) -> bytes:
        """What ``mtx -f DEVICE status`` prints: mtx prints the ``-f`` argument as it was given,
        so the caller names the file as it is reached (its path in the mount)."""
        return mtx_status_text(await self.changer.status(), device).encode()
