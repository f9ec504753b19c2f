"""iscsifs: a userspace iSCSI initiator that mounts LUNs as regular files."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _stale_compiled_modules() -> bool:
    """In a source tree (an editable install), is a compiled module older than its ``.py``? Then
    the build no longer matches the code: run the sources, all of them (a compiled module calls
    the compiled code of the others directly, so they cannot be mixed)."""
    import importlib.machinery as machinery

    from iscsifs.compiled import COMPILED_MODULES

    package = _os.path.dirname(__file__)
    if not _os.path.exists(_os.path.join(package, _os.pardir, "pyproject.toml")):
        return False  # installed from a wheel: what pip unpacked belongs together
    for module in COMPILED_MODULES:
        base = _os.path.join(package, *module.split(".")[1:])
        try:
            source = _os.stat(base + ".py").st_mtime
        except OSError:
            continue
        for suffix in machinery.EXTENSION_SUFFIXES:
            try:
                if _os.stat(base + suffix).st_mtime < source:
                    return True
            except OSError:
                pass
    return False


def _import_sources_only() -> None:
    """Import iscsifs's ``.py`` files even where the build compiled them (``iscsifs.compiled``)."""
    import importlib.machinery as machinery
    from collections.abc import Sequence
    from importlib.abc import MetaPathFinder
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    loaders = [(machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES)]

    class SourcesOnly(MetaPathFinder):
        def find_spec(self, fullname: str, path: Sequence[str] | None,
                      target: ModuleType | None = None) -> ModuleSpec | None:
            if not fullname.startswith(__name__ + ".") or path is None:
                return None
            for entry in path:
                spec = machinery.FileFinder(entry, *loaders).find_spec(fullname)
                if spec is not None:
                    return spec
            return None

    _sys.meta_path.insert(0, SourcesOnly())


if _os.environ.get("ISCSIFS_PURE_PYTHON", "") not in ("", "0"):
    _import_sources_only()  # asked for: one installation runs either way
elif _stale_compiled_modules():
    _sys.stderr.write("iscsifs: the compiled modules are older than their sources: running pure Python "
                      "(rebuild with: pip install -e .)\n")
    _import_sources_only()
