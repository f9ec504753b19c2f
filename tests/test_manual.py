"""iscsifs(8) against the command line it documents: every -o option of the option table, every
argument of every command and every exit code is in the manual page and in --help, and nothing
is in one and not the other; mandoc finds nothing wrong with it; pip installs it."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from iscsifs.cli import options

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "iscsifs.8"


def section(name: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n.Sh {name}\n")
    end = text.find("\n.Sh ", start + 1)
    return text[start : end if end >= 0 else None]


def manual_mount_options() -> set[str]:
    """The names each ``.It`` of MOUNT OPTIONS documents: ``.It Cm uid Ns = Ns Ar n , Cm gid ...``."""
    names: set[str] = set()
    for line in section("MOUNT OPTIONS").splitlines():
        if line.startswith(".It Cm "):
            words = line.split()
            names.add(words[2])
            names.update(words[i + 2] for i, w in enumerate(words) if w == "," and i + 2 < len(words)
                         and words[i + 1] == "Cm")
            if "Ns" not in line:  # ".It Cm ro , rw": plain words after commas
                names.update(w for w in words[3:] if w not in (",", "Cm"))
    return names


def table_options() -> set[str]:
    return (set(options.VALUED) | set(options.FLAGS)) - options.KERNEL_FLAGS


def test_every_mount_option_is_in_the_manual_and_in_help():
    in_manual, in_table = manual_mount_options(), table_options()
    assert in_manual == in_table, (f"only in the manual: {sorted(in_manual - in_table)}; "
                                   f"only in the option table: {sorted(in_table - in_manual)}")
    help_text = options.OPTIONS_HELP
    missing = [o for o in in_table if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", help_text)]
    assert not missing, f"not in --help: {missing}"
    kernel = section("MOUNT OPTIONS")
    assert all(flag in kernel for flag in ("nodev", "nosuid", "noexec", "noatime"))


def parsers() -> dict[str, argparse.ArgumentParser]:
    return {"": options._mount_parser(), "ls": options._ls_parser(), "stats": options._stats_parser(),
            "discard": options._discard_parser(), "map": options._map_parser(), "pr": options._pr_parser(),
            "inq": options._inq_parser(), "opcodes": options._opcodes_parser(), "raw": options._raw_parser(),
            "mt": options._mt_parser(), "mtx": options._mtx_parser()}


def test_every_command_and_argument_is_in_the_manual():
    synopsis = section("SYNOPSIS")
    page = PAGE.read_text()
    # Flags of the command itself; not another program's (".Xr fusermount3 1 Fl u").
    documented = set(re.findall(r"\bFl (-?[\w-]+)", re.sub(r"Xr \S+ \d+ Fl \S+", "", page)))
    for name, parser in parsers().items():
        if name:
            assert f".Cm {name}" in synopsis, f"command {name} is not in the SYNOPSIS"
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag.lstrip("-") and flag[1:] in documented, f"{name or 'mount'} {flag} is not in the manual"
    known = {flag[1:] for p in parsers().values() for a in p._actions for flag in a.option_strings}
    assert documented <= known, f"in the manual, not on the command line: {sorted(documented - known)}"
    assert set(options.SUBCOMMANDS) == {n for n in parsers() if n}


def test_the_exit_codes_agree():
    manual = dict(re.findall(r"\.It (\d)\n(.+)", section("EXIT STATUS")))
    helped = dict(re.findall(r"^  (\d)  (.+)$", options.EXIT_CODES_HELP, re.M))
    assert sorted(manual) == sorted(helped) == [str(n) for n in range(8)]


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="needs mandoc (Debian package mandoc)")
def test_mandoc_finds_nothing_wrong():
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(PAGE)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout and not r.stderr, r.stdout + r.stderr
    r = subprocess.run(["mandoc", "-T", "utf8", str(PAGE)], capture_output=True, text=True)
    assert "mount iSCSI LUNs as regular files" in r.stdout


def test_pip_installs_the_manual_page(tmp_path):
    """``pip install .`` installs what the wheel holds under its data: the page goes to
    share/man/man8 of the prefix (a venv's, or /usr/local)."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("iscsifs-*.whl")
    with zipfile.ZipFile(wheel) as z:
        pages = [n for n in z.namelist() if n.endswith("/data/share/man/man8/iscsifs.8")]
        assert len(pages) == 1 and z.read(pages[0]) == PAGE.read_bytes()
    # The development venv has it too (.ci/setup), where man finds it beside .venv/bin.
    venv_page = Path(sys.prefix) / "share" / "man" / "man8" / "iscsifs.8"
    assert venv_page.read_bytes() == PAGE.read_bytes(), "run .ci/setup: the venv's manual page is missing or old"
