"""A target as the layers above ``net`` hold it, over the in-memory fake target: a ``Multipath``
to one fake target (``open_multipath``), and that multipath in a pool (``in_pool``), as a mount
holds it."""

from __future__ import annotations

import trio
from iscsifs.block.identity import identity_of
from iscsifs.net.multipath import Multipath
from iscsifs.net.pool import PooledTarget, TargetPool
from iscsifs.proto.address import Portal
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import RecoveryPolicy

from support.fake_target import FakePortals, FakeTarget

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")


async def open_multipath(nursery: trio.Nursery, **kw: object) -> tuple[FakeTarget, Multipath]:
    """A Multipath (what the layers above use) to one fake target, which ``kw`` sets up."""
    fakes = FakePortals(nursery, max_cmd_sn_delta=8)
    fakes.setup = lambda portal, target: [setattr(target, k, v) for k, v in kw.items()]
    session = await Multipath.open(nursery, [Portal("fake")], CONFIG, RecoveryPolicy(), connect=fakes,
                                   identify=identity_of)
    return fakes.targets[0][1], session


def in_pool(nursery: trio.Nursery, multipath: Multipath) -> PooledTarget:
    """``multipath`` as the mount holds a target: in a pool (files open on it keep it)."""

    async def opener(target: str, identities: object) -> Multipath:
        return multipath

    return TargetPool(nursery, opener).target(multipath.target_name, [multipath.portal])
