"""Which build runs, compiled (mypyc) or pure Python, and that the build makes what it says: every
module of ``iscsifs.compiled`` compiled (``tests/test_ecosystem.py``'s ``pip install .``), or
none of them where $ISCSIFS_PURE_PYTHON is set or no C compiler works; never half of them."""

from __future__ import annotations

import ast
import errno
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from iscsifs import compiled

ROOT = Path(__file__).resolve().parent.parent
# .ci/run sets it: "compiled" for the whole suite, "pure" for the unit tests run on pure Python.
EXPECTED = os.environ.get("ISCSIFS_EXPECT_BUILD")
# Building a wheel is the same in both passes of .ci/run: once is enough.
once = pytest.mark.skipif(bool(os.environ.get("ISCSIFS_WORKERS")), reason="the build does not depend on workers")


def test_which_build_runs(capsys):
    which = compiled.build()
    with capsys.disabled():
        print(f"\niscsifs build under test: {compiled.describe()}")
    assert not which.startswith("partial"), f"a half-compiled build: {which}"
    if EXPECTED:
        assert which == EXPECTED, f"expected the {EXPECTED} build, running {compiled.describe()}"


def test_the_pure_variable_imports_the_sources_of_an_installed_compiled_build():
    code = ("import iscsifs.compiled as c, iscsifs.mount.fs as fs; "
            "print(c.build(), fs.__file__.endswith('.py'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env=dict(os.environ, ISCSIFS_PURE_PYTHON="1"))
    assert out.stdout.split() == ["pure", "True"]


def test_version_names_the_build():
    out = subprocess.run([sys.executable, "-m", "iscsifs", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and compiled.describe() in out.stdout, out.stdout + out.stderr


def test_no_compiled_class_uses_what_mypyc_gets_wrong():
    """Three things mypyc compiles wrongly, kept out of every compiled module: an exception class
    with class attributes (mypyc drops them: an ``errno =`` reads as the base class's; such errors
    live in modules left pure Python, ``iscsifs.block.errors``, where the errno is checked for
    real below), a method aliased in a class body, and an except-name reused across types."""
    for module in compiled.COMPILED_MODULES:
        assert importlib.util.find_spec(module) is not None, module
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases):
                assigned = [s for s in node.body if isinstance(s, ast.Assign | ast.AnnAssign)]
                assert not assigned, f"{module}.{node.name} has class attributes: move it to a module not compiled"
        # A method given a second name in the class body (``mkdir = _refuse``) is no method once
        # compiled (mypyc: "Unsupported default attribute value"): each must be written out.
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
                aliases = [t.id for a in node.body if isinstance(a, ast.Assign) and isinstance(a.value, ast.Name)
                           and a.value.id in methods for t in a.targets if isinstance(t, ast.Name)]
                assert not aliases, f"{module}.{node.name}: {aliases} alias methods, which mypyc does not compile"
        # One name bound by except clauses of different types in one function: mypyc gives the
        # variable the first clause's type and raises TypeError when another clause binds it.
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                bound: dict[str, set[str]] = {}
                for handler in ast.walk(fn):
                    if isinstance(handler, ast.ExceptHandler) and handler.name and handler.type is not None:
                        bound.setdefault(handler.name, set()).add(ast.unparse(handler.type))
                reused = {name: types for name, types in bound.items() if len(types) > 1}
                assert not reused, f"{module}.{fn.name}: except ... as {reused}: one name per exception type"
    from iscsifs.block.errors import LunRangeError

    assert LunRangeError("x").errno == errno.ENOSPC


def build_wheel(dest: Path, **env: str) -> tuple[list[str], str]:
    """A wheel built from a copy of the sources as a fresh clone has them (no build/, nothing compiled)."""
    source = dest / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.so", "__pycache__", "*.egg-info", ".hypothesis", ".pytest_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(dest), str(source)],
                       capture_output=True, text=True, timeout=600, env={
                           **{k: v for k, v in os.environ.items() if k != compiled.PURE_VARIABLE}, **env})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = dest.glob("iscsifs-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return z.namelist(), r.stdout + r.stderr


def extension_modules(names: list[str]) -> set[str]:
    return {n.split(".cpython-")[0].replace("/", ".") for n in names if n.endswith(".so")}


@once
def test_the_pure_variable_builds_pure_python(tmp_path):
    names, log = build_wheel(tmp_path, ISCSIFS_PURE_PYTHON="1")
    assert not extension_modules(names)
    assert "ISCSIFS_PURE_PYTHON is set: building pure Python" in log
    assert "iscsifs/mount/fs.py" in names


@once
def test_without_a_working_compiler_the_build_is_pure_python(tmp_path):
    names, log = build_wheel(tmp_path, CC="false")
    assert not extension_modules(names), "a build that could not compile left compiled modules behind"
    assert "compiling failed" in log and "building pure Python" in log


@pytest.mark.skipif(compiled.build() != "compiled", reason="needs the compiled build")
def test_a_source_tree_edited_after_its_build_runs_the_sources(tmp_path):
    """An editable install whose compiled module is older than its edited ``.py`` runs pure Python
    (all of it: compiled modules call each other's compiled code directly), and says so."""
    import iscsifs

    tree = tmp_path / "tree"
    shutil.copytree(Path(iscsifs.__file__).parent, tree / "iscsifs", ignore=shutil.ignore_patterns("__pycache__"))
    for shared in ROOT.glob("*__mypyc*"):
        shutil.copy2(shared, tree)
    (tree / "pyproject.toml").write_text("")
    code = "import iscsifs.compiled as c; print(c.build(), c.__file__)"
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("ISCSIFS_PURE_PYTHON", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True,
                         cwd=tmp_path)
    assert out.stdout.split()[0] == "compiled" and not out.stderr, out.stdout + out.stderr
    lun = tree / "iscsifs" / "block" / "lun.py"
    built = max(p.stat().st_mtime for p in [*lun.parent.glob("lun.*.so"), *tree.glob("*__mypyc.*")])
    os.utime(lun, (built + 10,) * 2)  # edited after the build
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True,
                         cwd=tmp_path)
    assert out.stdout.split()[0] == "pure", out.stdout
    assert "compiled modules are older than their sources: running pure Python" in out.stderr
    # A rebuild rewrites the shared library that holds every module's code, and may leave a
    # module's own small library as it was: that build is not stale.
    for shared in tree.glob("*__mypyc.*"):
        os.utime(shared, (built + 20,) * 2)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True,
                         cwd=tmp_path)
    assert out.stdout.split()[0] == "compiled" and not out.stderr, out.stdout + out.stderr
