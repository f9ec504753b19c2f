"""iscsifs: a userspace iSCSI initiator that mounts LUNs as regular files."""

import os as _os
import sys as _sys

from iscsifs.compiled import COMPILED_MODULES as _COMPILED_MODULES
from iscsifs.compiled import pure_requested as _pure_requested

__version__ = "0.1.0"


def _stale_compiled_modules() -> bool:
    """In a source tree (an editable install), is the compiled code older than a ``.py`` it was
    compiled from? Then the build no longer matches the code: run the sources, all of them (a
    compiled module calls the compiled code of the others directly, so they cannot be mixed)."""
    import glob
    import importlib.machinery as machinery

    package = _os.path.dirname(__file__)
    tree = _os.path.join(package, _os.pardir)
    if not _os.path.exists(_os.path.join(tree, "pyproject.toml")):
        return False  # installed from a wheel: what pip unpacked belongs together
    # mypyc puts the code of every module in one shared library beside the package (a rebuild
    # rewrites it, and leaves each module's own small library as it was when that did not change).
    built = [_os.stat(path).st_mtime for path in glob.glob(_os.path.join(tree, "*__mypyc.*"))]
    for module in _COMPILED_MODULES:
        base = _os.path.join(package, *module.split(".")[1:])
        for suffix in machinery.EXTENSION_SUFFIXES:
            try:
                own = _os.stat(base + suffix).st_mtime
                source = _os.stat(base + ".py").st_mtime
            except OSError:
                continue
            if max([own, *built]) < source:
                return True
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


if _pure_requested():
    _import_sources_only()  # asked for: one installation runs either way
elif _stale_compiled_modules():
    _sys.stderr.write("iscsifs: the compiled modules are older than their sources: running pure Python "
                      "(rebuild with: pip install -e .)\n")
    _import_sources_only()
