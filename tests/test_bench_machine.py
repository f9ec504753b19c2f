"""``bench/machine.py``: the machine every benchmark table is printed with, read from
/proc/cpuinfo, /proc/self/maps and CPython's configure arguments; and ``bench.ab.warm_tgtd``,
the READ that puts tgtd's allocator in one state before any stack is measured."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import warm_tgtd
from bench.machine import Machine, cpu_info, python_build, shared_libpython, this_machine

from support.targets import qemu_io_has_iscsi

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC  7B13 64-Core Processor
flags\t\t: fpu vme sse2 hypervisor lahf_lm
processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
"""


def test_the_cpu_model_and_the_hypervisor_flag():
    assert cpu_info(CPUINFO) == ("AMD EPYC 7B13 64-Core Processor", True)
    assert cpu_info(CPUINFO.replace(" hypervisor", "")) == ("AMD EPYC 7B13 64-Core Processor", False)
    assert cpu_info("") == ("unknown CPU", False)


def test_pgo_and_lto_from_configure_arguments():
    assert python_build("'--prefix=/usr' '--enable-shared'") == (False, False)
    assert python_build("'--enable-optimizations' '--with-lto'") == (True, True)
    assert python_build("--enable-optimizations --with-lto=thin") == (True, True)
    assert python_build("'--with-lto-foo'") == (False, False)


MAPS = """55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 123 /usr/bin/python3.11
7f2afa478000-7f2afa49e000 r--p 00000000 08:01 456 /lib/x86_64-linux-gnu/libc.so.6
7ffd1a2b3000-7ffd1a2d4000 rw-p 00000000 00:00 0 [stack]
7f2afa600000-7f2afa601000 rw-p 00000000 00:00 0
"""


def test_a_shared_libpython_is_seen_in_the_maps():
    assert not shared_libpython(MAPS)
    assert shared_libpython(MAPS + "7fcb18a00000-7fcb18b00000 r-xp 00000000 08:01 789 "
                                   "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n")
    assert not shared_libpython("")
    assert shared_libpython("7f0-7f1 r-xp 00000000 08:01 789 /opt/lib/libpython3.11.so.1.0 (deleted)\n")
    unknown = Machine("AMD EPYC", 2, True, "6.1.0", "CPython 3.11.2", "/usr/bin/python3.11", None, False, False)
    assert "(libpython shared or static: unknown, no PGO or LTO recorded)" in unknown.line()


def test_the_line_names_the_cpu_and_the_python_build():
    m = Machine("AMD EPYC", 2, True, "6.1.0", "CPython 3.11.7", "/opt/py/bin/python3.11", True, False, False)
    assert m.line() == ("AMD EPYC, 2 vCPUs, VM, Linux 6.1.0, cpuidle unknown, CPython 3.11.7 at "
                        "/opt/py/bin/python3.11 (libpython shared, no PGO or LTO recorded)")
    halting = Machine("AMD EPYC", 2, True, "6.1.0", "CPython 3.11.2", "/usr/bin/python3.11", False, False, False,
                      "haltpoll")
    assert ", Linux 6.1.0, cpuidle haltpoll, CPython 3.11.2 at " in halting.line()
    static = Machine("AMD EPYC", 2, False, "6.1.0", "CPython 3.11.2", "/usr/bin/python3.11", False, True, True)
    assert static.line().endswith("(libpython static, PGO and LTO recorded)")
    here = this_machine()
    assert here.cpus >= 1 and here.python.startswith("CPython 3.") and here.cpu_model in here.line()
    assert here.executable == os.path.realpath(sys.executable)
    assert here.cpuidle and f", cpuidle {here.cpuidle}, " in here.line()


def test_tgtd_is_warmed_by_an_8_mib_read_and_a_failed_one_says_so(make_target):
    """``bench.ab.warm_tgtd``: True only once qemu-io has read the 8 MiB (the benchmark says
    when tgtd was not warmed)."""
    if not qemu_io_has_iscsi():
        pytest.skip("needs qemu-io with iscsi:// (qemu-utils, qemu-block-extra)")
    target = make_target({1: 16 << 20, 2: 4 << 20})
    assert warm_tgtd(target.lun_url(1))
    assert not warm_tgtd(target.lun_url(2))  # 4 MiB: the READ cannot be done
    assert not warm_tgtd(target.lun_url(7))  # no such LUN
