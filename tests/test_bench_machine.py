"""``bench/machine.py``: the machine every benchmark table is printed with, read from
/proc/cpuinfo and CPython's configure arguments."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import Machine, cpu_info, python_build, this_machine

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


def test_the_line_names_the_cpu_and_the_python_build():
    m = Machine("AMD EPYC", 2, True, "6.1.0", "CPython 3.11.7", False, False)
    assert m.line() == "AMD EPYC, 2 vCPUs, VM, Linux 6.1.0, CPython 3.11.7 (no PGO, no LTO)"
    here = this_machine()
    assert here.cpus >= 1 and here.python.startswith("CPython 3.") and here.cpu_model in here.line()
