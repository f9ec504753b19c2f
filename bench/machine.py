"""The machine a figure was measured on, printed beside every table of ``bench/run.py`` and
``bench/ab.py``: machines of one kind differ (on one "AMD EPYC" VM the one-wait ceiling was half
another's), and so do interpreters (on the same VM, a mount ran 4 KiB I/O 1.11-1.24x as fast
on Debian's python3 as on pyenv's default build, a shared libpython without PGO), so a figure
without its machine and its interpreter says nothing.

    .venv/bin/python bench/machine.py             # the line, as the tables print it
    .venv/bin/python bench/machine.py --python    # the interpreter's part of it
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    cpu_model: str  # /proc/cpuinfo's "model name" (a VM may name only the family: "AMD EPYC")
    cpus: int
    virtual: bool  # the CPU says it runs under a hypervisor
    kernel: str
    python: str  # e.g. "CPython 3.11.7"
    executable: str  # the interpreter's real path: which build of that version
    shared: bool | None  # libpython is a shared library (pyenv's default), not linked in; None: unknown
    # PGO and LTO as configure recorded them. Debian builds its static python3 with both (its
    # changelog) without recording either (its sysconfig is its shared build's): False means
    # "not recorded", not "not built so".
    optimized: bool
    lto: bool
    # How an idle CPU waits (/sys/devices/system/cpu/cpuidle/current_driver): on a VM, "haltpoll"
    # polls a while before it halts, "none" halts at once, so each wake-up of a process on the
    # other vCPU costs an exit to the host. VM 2 had haltpoll, VM 3 none (bench/README.md).
    cpuidle: str = "unknown"

    @property
    def python_build(self) -> str:
        recorded = [flag for flag, on in (("PGO", self.optimized), ("LTO", self.lto)) if on]
        libpython = {True: "shared", False: "static", None: "shared or static: unknown"}[self.shared]
        return (f"{self.python} at {self.executable} (libpython {libpython}, "
                f"{' and '.join(recorded) or 'no PGO or LTO'} recorded)")

    def line(self) -> str:
        kind = "vCPUs, VM" if self.virtual else "CPUs"
        return f"{self.cpu_model}, {self.cpus} {kind}, Linux {self.kernel}, cpuidle {self.cpuidle}, {self.python_build}"

    def to_json(self) -> dict[str, object]:
        return {"cpu_model": self.cpu_model, "cpus": self.cpus, "virtual": self.virtual, "kernel": self.kernel,
                "python": self.python, "executable": self.executable, "shared_libpython": self.shared,
                "optimized": self.optimized, "lto": self.lto, "cpuidle": self.cpuidle}


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


def shared_libpython(maps: str) -> bool:
    """Whether a libpython shared library is mapped, from /proc/self/maps: the build itself, where
    sysconfig may describe another one (Debian's records its shared library's configure)."""
    paths = (line.split(maxsplit=5)[5] for line in maps.splitlines() if len(line.split(maxsplit=5)) == 6)
    return any(os.path.basename(path.removesuffix(" (deleted)")).startswith("libpython") for path in paths)


def this_machine() -> Machine:
    try:
        with open("/proc/cpuinfo") as f:
            model, virtual = cpu_info(f.read())
    except OSError:
        model, virtual = platform.processor() or "unknown CPU", False
    try:
        with open("/proc/self/maps") as f:
            shared = shared_libpython(f.read())
    except OSError:
        shared = None  # sysconfig's Py_ENABLE_SHARED may describe another build (Debian's says 1)
    optimized, lto = python_build(sysconfig.get_config_var("CONFIG_ARGS") or "")
    try:
        with open("/sys/devices/system/cpu/cpuidle/current_driver") as f:
            cpuidle = f.read().strip() or "unknown"
    except OSError:
        cpuidle = "unknown"
    return Machine(model, os.cpu_count() or 0, virtual, platform.release(),
                   f"{platform.python_implementation()} {platform.python_version()}",
                   os.path.realpath(sys.executable), shared, optimized, lto, cpuidle)


if __name__ == "__main__":
    here = this_machine()
    print(here.python_build if sys.argv[1:] == ["--python"] else here.line())
