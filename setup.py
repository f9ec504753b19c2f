"""The build: pyproject.toml holds the metadata; this adds the compiled hot path.

The modules ``iscsifs/compiled.py`` lists are compiled with mypyc where it and a C compiler are
at hand (the machine needs gcc and the Python headers for pyfuse3 already). With
``ISCSIFS_PURE_PYTHON`` set, or if compiling fails, the same package is built as pure Python:
a warning says so, and nothing compiled is left behind, so a build is never half compiled.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
LIST = runpy.run_path(str(HERE / "iscsifs" / "compiled.py"))


def warn(message: str) -> None:
    print(f"iscsifs build: {message}", file=sys.stderr)


class BuildExtOrPure(build_ext):
    """build_ext that falls back to pure Python when compiling fails (no compiler, no headers)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1  # one C file per module: compile them side by side

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001  # whatever stops the C build, the package still works
            warn(f"compiling failed ({type(exc).__name__}: {str(exc)[:300]}); building pure Python")
            for ext in self.extensions:  # in the source tree for an editable install, else the build's
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []


def ext_modules() -> list[Any]:
    if LIST["pure_requested"]():
        warn(f"${LIST['PURE_VARIABLE']} is set: building pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        warn("mypyc is not installed: building pure Python")
        return []
    files = [m.replace(".", "/") + ".py" for m in LIST["COMPILED_MODULES"]]
    try:
        return list(mypycify(files, opt_level="3", debug_level="0"))
    except (Exception, SystemExit) as exc:  # noqa: BLE001  # mypyc exits on a type error; pure Python still works
        warn(f"mypyc refused the modules (exit status {exc}: the type errors are above; the packages they "
             "import must be importable by the build); building pure Python")
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildExtOrPure})
