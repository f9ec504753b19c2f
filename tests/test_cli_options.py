"""The command line's parsing (``iscsifs.cli.options``): ``-d`` is every command's, given before
its name or after it, and each command's ``debug`` is what was typed."""

from __future__ import annotations

import dataclasses

import pytest
from iscsifs.cli import options
from iscsifs.cli.options import parse_command

from support.targets import ISCSIFS, mounted, needs_fuse, run

# Each command with the arguments it needs.
COMMANDS = {
    "mount": ["iscsi://127.0.0.1/iqn.2026-11.test:t", "/mnt"],
    "ls": ["ls", "iscsi://127.0.0.1"],
    "stats": ["stats", "/mnt"],
    "discard": ["discard", "/mnt/1", "--length", "4096"],
    "map": ["map", "/mnt/1"],
    "pr": ["pr", "/mnt/1", "--release"],
    "inq": ["inq", "/mnt/1", "--page", "0x83"],
    "opcodes": ["opcodes", "/mnt/1"],
    "raw": ["raw", "-r", "512", "/mnt/1", "28", "0", "0", "0", "0", "0", "0", "0", "1", "0"],
    "mt": ["mt", "/mnt/t/1", "fsf", "2"],
    "mtx": ["mtx", "/mnt/t/3", "load", "1", "0"],
}


def test_every_command_is_here():
    assert set(COMMANDS) == {"mount", *options.SUBCOMMANDS}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_d_before_the_command_is_d_after_it(name):
    argv = COMMANDS[name]
    plain = parse_command(argv)
    assert plain.debug is False
    before = parse_command(["-d", *argv])
    after = parse_command([*argv, "-d"])
    assert before == after == dataclasses.replace(plain, debug=True)
    if name != "mount":  # right after the subcommand's name too
        assert parse_command([argv[0], "-d", *argv[1:]]) == before


def test_every_debug_field_is_set_by_its_parser():
    """No command carries a ``debug`` that nothing sets: each parses to True with -d."""
    parsed = {type(parse_command(["-d", *argv])) for argv in COMMANDS.values()}
    with_debug = {t for t in options.Command.__args__ if "debug" in {f.name for f in dataclasses.fields(t)}}
    assert with_debug == parsed
    assert all(parse_command(["-d", *argv]).debug for argv in COMMANDS.values())


def test_d_stats_adds_the_details_of_an_error(tmp_path):
    r = run(*ISCSIFS, "-d", "stats", str(tmp_path))
    err = r.stderr.decode()
    assert r.returncode == 2 and "is not in an iscsifs mount" in err and "Traceback" in err
    r = run(*ISCSIFS, "stats", str(tmp_path))
    err = r.stderr.decode()
    assert r.returncode == 2 and "is not in an iscsifs mount" in err and "Traceback" not in err


@needs_fuse
def test_d_stats_of_a_mount(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        r = run(*ISCSIFS, "-d", "stats", str(mnt))
        assert r.returncode == 0, r.stderr
        assert "commands" in r.stdout.decode()


def test_cache_option():
    assert options.parse_mount_options([]).mount.cache is options.CacheMode.NONE
    assert options.parse_mount_options(["cache=writeback"]).mount.cache is options.CacheMode.WRITEBACK
    assert options.parse_mount_options(["cache=writeback,cache=none"]).mount.cache is options.CacheMode.NONE
    with pytest.raises(options.UsageError, match="cache=always is not none or writeback"):
        options.parse_mount_options(["cache=always"])
