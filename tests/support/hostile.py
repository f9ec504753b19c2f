"""A hostile target: the in-memory fake target, answering the mount's SCSI commands with data cut
short, extended past what was asked, replaced by random bytes, random sense data or a random
status, as a SAN array with a firmware bug or a target that wants the mount dead would. Beside
its disks it serves a tape library (``support.fake_library``: two drives and a changer), whose
SSC and SMC answers it spoils the same way.

``scenario`` runs the real mount stack (``build_tree``: the pool, the scan, the watch with its
idle poll, rescans and capacity refreshes; ``IscsiFs`` for file operations) against it, on trio's
virtual clock so that every timeout and backoff takes no real time. What must hold: the mount
never ends (its nursery raises nothing), nothing hangs (every operation ends within a virtual
bound), every failed file operation is a ``FUSEError`` with an errno, and a scan that fails fails
with an error of the project's tree (what the command line turns into an exit code).

Run as a script for a long soak: ``.venv/bin/python tests/support/hostile.py --answers 1000000``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import pyfuse3
import trio
import trio.testing

if __name__ == "__main__":  # run as a script: the tests' own imports, as pytest sets them up
    sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from iscsifs.block.client import Client, ClientConfig
from iscsifs.mount.fs import MAP_XATTR_PREFIX, MT_STATUS_XATTR, MT_XATTR, MTX_STATUS_XATTR, MTX_XATTR, IscsiFs
from iscsifs.mount.serve import MountOptions, build_tree, shutdown
from iscsifs.mount.tree import Tree
from iscsifs.net.pool import TargetPool
from iscsifs.proto import pdu as P
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.scsi.response import decode_lun
from iscsifs.url import parse_url

from support.fake_library import Answer, FakeChanger, FakeTapeDrive, Library
from support.fake_target import FakeTarget, login_and_serve, sense_bytes, stream_pair

TARGET = "iqn.2026-11.test:hostile"
URL = parse_url(f"iscsi://127.0.0.1/{TARGET}")
# Short timeouts, in virtual seconds: the scenario crosses keepalives, command timeouts and
# recoveries many times over.
POLICY = RecoveryPolicy(nop_interval=1, nop_timeout=1, command_timeout=3, recovery_timeout=8, login_timeout=3)
OPERATION_BOUND = 600.0  # virtual seconds any one file operation may take before it counts as hung
UNIT_ATTENTIONS = (sense_bytes(0x06, 0x3F, 0x0E), sense_bytes(0x06, 0x2A, 0x09), sense_bytes(0x06, 0x29, 0x00))


@dataclass
class Tally:
    """What a run did: answers sent, how many of them hostile, and what became of the operations."""

    answers: int = 0
    hostile: int = 0
    scans_refused: int = 0
    operations: int = 0
    failed_operations: int = 0
    errnos: dict[int, int] = field(default_factory=dict)
    device_operations: int = 0  # of those, on a tape drive's or a changer's file
    blocks_read_back: int = 0  # tape blocks read that are the block written there


TALLY = Tally()  # over the whole test run: the suite's summary prints it


class World:
    """What every connection's fake target shares: the disk, the LUN list and the dice."""

    def __init__(self, rng: random.Random, hostility: float) -> None:
        self.rng = rng
        self.hostility = hostility
        self.disk = bytearray(1 << 16)
        # A library: drives at LUNs 3 and 4, the changer at 5, slot 1's tape in drive 0.
        self.library = Library.of(slots=4, drives=2)
        drives = [FakeTapeDrive(self.library, n) for n in range(2)]
        changer = FakeChanger(self.library, drives)
        self.devices: dict[int, FakeTapeDrive | FakeChanger] = {3: drives[0], 4: drives[1], 5: changer}
        assert changer.answer(bytes([0xA5, 0, 0, 0, 0x04, 0x00, 0x01, 0x00, 0, 0, 0, 0]), b"") == Answer()
        self.luns = [0, 1, 3, 4, 5]

    def mutation(self) -> str:
        TALLY.answers += 1
        if self.rng.random() >= self.hostility:
            return "keep"
        TALLY.hostile += 1
        return self.rng.choice(("cut", "extend", "random", "sense", "status"))

    def garbage(self, at_most: int = 300) -> bytes:
        return self.rng.randbytes(self.rng.randrange(at_most))


class HostileTarget(FakeTarget):
    """A ``FakeTarget`` whose every SCSI answer ``World.mutation`` may spoil."""

    def __init__(self, stream: trio.SocketStream, world: World, **kw: object) -> None:
        super().__init__(stream, **kw)  # type: ignore[arg-type]
        self.world = world
        self.disk = world.disk
        self.luns = world.luns

    async def scsi(self, req: P.ScsiCommand) -> None:
        op = req.cdb[0]
        device = self.world.devices.get(decode_lun(req.lun.to_bytes(8, "big")))
        if device is not None and op != 0xA0 and not (self.pending_status or self.pending_sense or self.swallow):
            data_out = bytes(await self.data_out(req)) if req.write else b""
            answer = device.answer(bytes(req.cdb), data_out)
            if answer.sense is None:
                await self.respond(req, answer.data)
            elif self.world.mutation() == "keep":
                await self.check_condition_with_data(req, answer.data, answer.sense)
            else:  # the sense spoiled: random bytes in its place
                await self.check_condition_with_data(req, answer.data, self.world.garbage(40))
            return
        if op == 0x35:  # SYNCHRONIZE CACHE(10)
            await self.respond(req, b"")
        elif op == 0x9E and req.cdb[1] & 0x1F == 0x12:  # GET LBA STATUS: every block mapped
            blocks = len(self.disk) // 512
            descriptor = bytes(8) + blocks.to_bytes(4, "big") + bytes(4)  # LBA 0, every block, mapped
            await self.respond(req, (20).to_bytes(4, "big") + bytes(4) + descriptor)
        else:
            await super().scsi(req)

    async def respond(self, req: P.ScsiCommand, data: bytes) -> None:
        how = self.world.mutation()
        rng = self.world.rng
        if how == "keep":
            await super().respond(req, data)
        elif how == "cut":
            await super().respond(req, data[: rng.randrange(len(data))] if data else b"")
        elif how == "random":
            await super().respond(req, self.world.garbage())
        elif how == "extend":  # past the allocation length: a protocol error the connection must survive
            self.exp_cmd_sn = req.cmd_sn + 1
            await self.send(P.DataIn(0, req.initiator_task_tag, P.RESERVED_TAG, data_sn=0, buffer_offset=0,
                                     final=True, has_status=True, data=data + self.world.garbage() + b"x",
                                     **self.sn()))
        elif how == "sense":  # CHECK CONDITION with a data segment of random bytes (SenseLength too)
            self.exp_cmd_sn = req.cmd_sn + 1
            await self.send(P.ScsiResponse(req.initiator_task_tag, 0, 0x02, data=self.world.garbage(),
                                           **self.sn()))
        else:
            self.exp_cmd_sn = req.cmd_sn + 1
            status = rng.choice((0x08, 0x18, 0x28, 0x30, 0x40, rng.randrange(256)))
            await self.send(P.ScsiResponse(req.initiator_task_tag, 0, status, **self.sn()))

    async def serve_scsi(self, req: P.ScsiCommand) -> None:
        if req.cdb[0] == 0x28 and self.world.rng.random() < self.world.hostility:
            lba, n = int.from_bytes(req.cdb[2:6], "big"), int.from_bytes(req.cdb[7:9], "big")
            await self.respond(req, bytes(self.disk[lba * 512 : (lba + n) * 512]))
        else:
            TALLY.answers += 1
            await super().serve_scsi(req)


async def _operation(fs: IscsiFs, call: object, *args: object) -> None:
    """One file operation: it returns, or fails with an errno; within the bound either way."""
    TALLY.operations += 1
    with trio.fail_after(OPERATION_BOUND):
        try:
            await call(*args)  # type: ignore[operator]
        except pyfuse3.FUSEError as exc:
            assert exc.errno > 0, exc
            TALLY.failed_operations += 1
            TALLY.errnos[exc.errno] = TALLY.errnos.get(exc.errno, 0) + 1


async def _file_operations(fs: IscsiFs, rng: random.Random) -> None:
    for inode in sorted(i for i, n in fs.nodes.items() if n.lun is not None):
        await _operation(fs, fs.getattr, inode)
        try:
            fh = (await fs.open(inode, os.O_RDWR, None)).fh
        except pyfuse3.FUSEError as exc:
            assert exc.errno in (errno.EROFS, errno.ENXIO, errno.ENOENT), exc
            fh = (await fs.open(inode, os.O_RDONLY, None)).fh if exc.errno == errno.EROFS else None
        if fh is None:
            continue
        size = fs.nodes[inode].lun.size if inode in fs.nodes else 0  # type: ignore[union-attr]
        for _ in range(3):
            offset = rng.randrange(max(1, size))
            await _operation(fs, fs.read, fh, offset, rng.choice((1, 512, 4096, 9000)))
            await _operation(fs, fs.write, fh, offset, rng.randbytes(rng.choice((1, 512, 3000))))
        await _operation(fs, fs.fsync, fh, False)
        await _operation(fs, fs.getxattr, inode, b"user.iscsi.wwn", None)
        await _operation(fs, fs.getxattr, inode, MAP_XATTR_PREFIX + b"0", None)
        await _operation(fs, fs.listxattr, inode, None)
        await fs.release(fh)
    for inode in sorted(i for i, n in fs.nodes.items() if n.tape is not None):
        await _tape_operations(fs, inode, rng)
    for inode in sorted(i for i, n in fs.nodes.items() if n.changer is not None):
        await _changer_operations(fs, inode, rng)


async def _open(fs: IscsiFs, inode: int, flags: int) -> int | None:
    """An open that may fail (with an errno, within the bound): its handle, or None."""
    TALLY.operations += 1
    TALLY.device_operations += 1
    with trio.fail_after(OPERATION_BOUND):
        try:
            return (await fs.open(inode, flags, None)).fh
        except pyfuse3.FUSEError as exc:
            assert exc.errno > 0, exc
            TALLY.failed_operations += 1
            TALLY.errnos[exc.errno] = TALLY.errnos.get(exc.errno, 0) + 1
            return None


async def _device_operation(fs: IscsiFs, call: object, *args: object) -> object:
    TALLY.device_operations += 1
    result: list[object] = []

    async def keep() -> None:
        result.append(await call(*args))  # type: ignore[operator]

    await _operation(fs, keep)
    return result[0] if result else None


async def _tape_operations(fs: IscsiFs, inode: int, rng: random.Random) -> None:
    """What tar and mt do with a drive's file: write a tape file, rewind, read it back, space."""
    fh = await _open(fs, inode, os.O_RDWR)
    blocks = [rng.randbytes(rng.choice((1, 512, 10240, 70000))) for _ in range(rng.randrange(1, 4))]
    if fh is not None:
        for block in blocks:
            await _device_operation(fs, fs.write, fh, 0, block)
        await _device_operation(fs, fs.flush, fh)  # close(2): a filemark
        await fs.release(fh)
    for verb in (b"bsf 1", b"bsr %d" % len(blocks)):  # back to the first block just written
        await _device_operation(fs, fs.setxattr, inode, MT_XATTR, verb, None)
    fh = await _open(fs, inode, os.O_RDONLY)
    if fh is not None:
        for block in blocks:
            got = await _device_operation(fs, fs.read, fh, 0, 1 << 17)
            if got is not None and bytes(got) == block:  # type: ignore[arg-type]
                TALLY.blocks_read_back += 1
        await fs.release(fh)
    for verb in rng.sample((b"rewind", b"eod", b"fsr 2", b"bsr 1", b"weof 1", b"load", b"erase", b"setblk 0",
                            b"fsf x", b"offline"), 3):
        await _device_operation(fs, fs.setxattr, inode, MT_XATTR, verb, None)
    await _device_operation(fs, fs.getxattr, inode, MT_STATUS_XATTR, None)


async def _changer_operations(fs: IscsiFs, inode: int, rng: random.Random) -> None:
    """What mtx does with a changer's file: its status, and moves that may or may not be possible."""
    fh = await _open(fs, inode, os.O_RDONLY)
    if fh is not None:
        await _device_operation(fs, fs.read, fh, 0, 4096)
        await fs.release(fh)
    await _device_operation(fs, fs.getxattr, inode, MTX_STATUS_XATTR, None)
    for verb in rng.sample((b"load 1 0", b"load 2 1", b"unload", b"unload 3 1", b"transfer 2 4", b"exchange 1 3",
                            b"next 0", b"first 1", b"inventory", b"load 99 7", b"eject"), 3):
        await _device_operation(fs, fs.setxattr, inode, MTX_XATTR, verb, None)


async def mount(nursery: trio.Nursery, world: World,
                live: set[HostileTarget] | None = None) -> tuple[IscsiFs, Tree, TargetPool]:
    """The real mount stack (the pool, the scan, the watch; ``IscsiFs`` for file operations) over
    ``world``'s targets, one per connection, each in ``live`` while its connection is up. Fails
    as ``build_tree`` does (IscsiError: the command line's one line and exit code)."""

    async def serve(target: HostileTarget) -> None:
        if live is not None:
            live.add(target)
        try:
            await login_and_serve(target)
        finally:
            if live is not None:
                live.discard(target)

    async def connect(portal: object) -> trio.SocketStream:
        ours, theirs = stream_pair()
        nursery.start_soon(serve, HostileTarget(theirs, world, max_cmd_sn_delta=16))
        return ours

    client = Client(ClientConfig(initiator_name="iqn.2026-11.test:hostile-initiator", recovery=POLICY,
                                 connect=connect))
    pool = TargetPool(nursery, partial(client.login, nursery, URL))
    with trio.fail_after(OPERATION_BOUND):
        tree = await build_tree(nursery, client, URL, pool, root_is_file=False, options=MountOptions())
    return IscsiFs(tree), tree, pool


async def scenario(rng: random.Random, hostility: float, rounds: int = 3) -> None:
    """The mount's life against a hostile target: scan, file I/O, idle polls, rescans (3F/0E),
    capacity changes (2A/09), resets (29/00). Raises if the mount would have ended or hung."""
    world = World(rng, hostility)
    live: set[HostileTarget] = set()  # targets whose connection is up: where unit attentions go
    async with trio.open_nursery() as nursery:
        try:
            fs, tree, pool = await mount(nursery, world, live)
        except IscsiError:
            TALLY.scans_refused += 1  # the command line's one line and exit code; nothing was mounted
            nursery.cancel_scope.cancel()
            return
        for _ in range(rounds):
            await _file_operations(fs, rng)
            change = rng.randrange(4)
            if change == 0:
                world.luns[:] = rng.choice(([0, 1, 3, 4, 5], [0, 1, 2, 3, 4, 5], [0, 2, 4, 5], [0]))
            elif change == 1:
                world.disk.extend(bytes(512 * rng.randrange(1, 64)))
            for target in list(live):
                target.pending_sense.append(rng.choice(UNIT_ATTENTIONS))
            await trio.sleep(rng.choice((0.5, 2.5, 6.0)))  # idle polls and the watch's work, virtually
        await shutdown(tree.files(), pool)
        nursery.cancel_scope.cancel()


def run(seed: int, hostility: float, rounds: int = 3) -> None:
    """One scenario on trio's virtual clock (autojump: a timeout costs no real time)."""
    trio.run(scenario, random.Random(seed), hostility, rounds, clock=trio.testing.MockClock(autojump_threshold=0))


def main() -> int:
    parser = argparse.ArgumentParser(description="Soak the mount stack in a hostile target's answers.")
    parser.add_argument("--answers", type=int, default=1_000_000, help="stop after this many SCSI answers")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("-v", dest="verbose", action="store_true", help="every log line, not only the errors")
    args = parser.parse_args()
    # Under a hostile target the mount's warnings are the expected ones; errors (a bug of ours
    # failing a request, a LUN taken for another device) are shown.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    # Nothing is mounted here: pyfuse3's notifications to the kernel (the watch's invalidations)
    # have nowhere to go, and its thread says so at each.
    logging.getLogger("pyfuse3").setLevel(logging.CRITICAL)
    started = time.monotonic()
    seed = args.seed
    while TALLY.answers < args.answers:
        hostility = (0.02, 0.1, 0.3, 1.0)[seed % 4]
        try:
            run(seed, hostility)
        except BaseException:
            print(f"seed {seed} (hostility {hostility}) failed:", file=sys.stderr)
            raise
        seed += 1
        if seed % 50 == 0:
            print(f"{TALLY.answers} answers ({TALLY.hostile} hostile), {TALLY.operations} operations "
                  f"({TALLY.failed_operations} failed), {seed - args.seed} scenarios, "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    print(f"ok: {TALLY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
