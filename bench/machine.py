"""The machine a figure was measured on, printed beside every table of ``bench/run.py`` and
``bench/ab.py``: machines of one kind differ (on one "AMD EPYC" VM the one-wait ceiling was half
another's), so a figure without its machine says nothing.

    .venv/bin/python bench/machine.py      # the line, as the tables print it
"""

from __future__ import annotations

import os
import platform
import sysconfig
from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    cpu_model: str  # /proc/cpuinfo's "model name" (a VM may name only the family: "AMD EPYC")
    cpus: int
    virtual: bool  # the CPU says it runs under a hypervisor
    kernel: str
    python: str  # e.g. "CPython 3.11.7"
    optimized: bool  # built with --enable-optimizations (PGO): the interpreter itself differs
    lto: bool  # built with --with-lto

    @property
    def python_build(self) -> str:
        flags = ["PGO" if self.optimized else "no PGO", "LTO" if self.lto else "no LTO"]
        return f"{self.python} ({', '.join(flags)})"

    def line(self) -> str:
        kind = "vCPUs, VM" if self.virtual else "CPUs"
        return f"{self.cpu_model}, {self.cpus} {kind}, Linux {self.kernel}, {self.python_build}"

    def to_json(self) -> dict[str, object]:
        return {"cpu_model": self.cpu_model, "cpus": self.cpus, "virtual": self.virtual, "kernel": self.kernel,
                "python": self.python, "optimized": self.optimized, "lto": self.lto}


def cpu_info(text: str) -> tuple[str, bool]:
    """The first CPU's model name, and whether the flags say "hypervisor", from /proc/cpuinfo."""
    model, virtual = "unknown CPU", False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = " ".join(value.split())
        elif key == "flags" and "hypervisor" in value.split():
            virtual = True
    return model, virtual


def python_build(config_args: str) -> tuple[bool, bool]:
    """(PGO, LTO) from sysconfig's CONFIG_ARGS, the arguments CPython's configure was given."""
    args = config_args.replace("'", " ").split()
    return "--enable-optimizations" in args, any(a == "--with-lto" or a.startswith("--with-lto=") for a in args)


def this_machine() -> Machine:
    try:
        with open("/proc/cpuinfo") as f:
            model, virtual = cpu_info(f.read())
    except OSError:
        model, virtual = platform.processor() or "unknown CPU", False
    optimized, lto = python_build(sysconfig.get_config_var("CONFIG_ARGS") or "")
    return Machine(model, os.cpu_count() or 0, virtual, platform.release(),
                   f"{platform.python_implementation()} {platform.python_version()}", optimized, lto)


if __name__ == "__main__":
    print(this_machine().line())
