"""Fixtures that start real peers: a private tgtd per test session (helpers: ``support``)."""

from __future__ import annotations

import pytest

from support.targets import HAVE_TGT, ROOT, TargetFactory
from support.tgt import TgtDaemon


@pytest.fixture(scope="session")
def tgt(tmp_path_factory):
    if not (ROOT and HAVE_TGT):
        pytest.skip("needs root and tgtd (Debian package tgt)")
    workdir = tmp_path_factory.mktemp("tgt")
    with TgtDaemon(workdir) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def make_target(tgt, tmp_path_factory):
    return TargetFactory(tgt, tmp_path_factory.mktemp("luns"))


@pytest.fixture
def private_tgt(tmp_path):
    """A tgtd of this test's own, for tests that need to know every target on the portal."""
    if not (ROOT and HAVE_TGT):
        pytest.skip("needs root and tgtd (Debian package tgt)")
    with TgtDaemon(tmp_path / "tgt") as daemon:
        yield daemon


def pytest_terminal_summary(terminalreporter):
    """How hard the hostile-target test pushed (tests/test_hostile.py): answers sent, and how many
    of them were spoiled."""
    from support.hostile import TALLY

    if TALLY.answers:
        terminalreporter.write_line(
            f"hostile target: {TALLY.answers} SCSI answers, {TALLY.hostile} of them cut short, extended, random, "
            f"random sense or random status; {TALLY.operations} file operations, {TALLY.failed_operations} failed "
            f"with an errno; {TALLY.scans_refused} scans refused cleanly")
