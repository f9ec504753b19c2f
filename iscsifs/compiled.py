"""The modules the build compiles with mypyc (``setup.py`` reads this list), and which build runs.

The hot path of a 4 KiB request is compiled: the PDU stream reader and the connection's sans-I/O
core, the CDB builders and response parsers, the trio connection, session and multipath, the
command policy, the read buffers and statistics, the LUN's read and write, and the FUSE
handlers. The PDU codec is not: it generates its code at import. They are the same type-checked ``.py``
files as the pure-Python build; ``pip install .`` compiles them where mypyc and a C compiler are
at hand, and leaves them pure Python otherwise, or when ``ISCSIFS_PURE_PYTHON`` is set. Set at
run time, the same variable makes an installed compiled build import the ``.py`` files instead.

What mypyc gets wrong stays out of these modules, and ``tests/test_build.py`` checks each: an
exception class with class attributes (mypyc drops them: an ``errno = ...`` would read as the
base's), a method aliased in a class body (never set), and one ``except ... as`` name bound by
clauses of different types (typed as the first). A function pickled by reference to the session
workers cannot be compiled either (``iscsifs.block.identity``).

This module imports nothing of iscsifs: the build runs it on its own.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os

PURE_VARIABLE = "ISCSIFS_PURE_PYTHON"

COMPILED_MODULES: tuple[str, ...] = (
    "iscsifs.proto.reader",
    "iscsifs.proto.connection",
    "iscsifs.proto.session",
    "iscsifs.scsi.cdb",
    "iscsifs.scsi.response",
    "iscsifs.net.outbox",
    "iscsifs.net.connection",
    "iscsifs.net.session",
    "iscsifs.net.multipath",
    "iscsifs.block.buffers",
    "iscsifs.block.stats",
    "iscsifs.block.command",
    "iscsifs.block.ranges",
    "iscsifs.block.lun",
    "iscsifs.mount.fs",
)


def pure_requested() -> bool:
    return os.environ.get(PURE_VARIABLE, "") not in ("", "0")


def is_compiled(module: str) -> bool:
    """Was ``module`` imported from an extension module (compiled), not from its ``.py``?"""
    origin = getattr(importlib.import_module(module), "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def build() -> str:
    """``compiled`` (every module of the list is), ``pure`` (none is), or ``partial`` (a broken
    build: some are); with the compiled ones for ``partial``."""
    compiled = [m for m in COMPILED_MODULES if is_compiled(m)]
    if not compiled:
        return "pure"
    if len(compiled) == len(COMPILED_MODULES):
        return "compiled"
    return "partial (" + ", ".join(compiled) + ")"


def describe() -> str:
    """One line for ``--version`` and the test report: which build this process runs."""
    which = build()
    if which == "compiled":
        return f"compiled with mypyc ({len(COMPILED_MODULES)} modules)"
    if which == "pure" and pure_requested():
        return f"pure Python (${PURE_VARIABLE} is set)"
    return "pure Python" if which == "pure" else which
