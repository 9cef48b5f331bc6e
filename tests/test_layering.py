"""Imports go one way: backprop -> service -> worker -> engine; engine needs only NumPy and the standard library.

Checked on the source with `ast` (every import statement, also those inside functions), so a violation is
reported as file:line without importing anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("engine", "worker", "service", "backprop")
# Of our packages, what each one may import (itself included).
MAY_IMPORT = {
    "engine": {"engine"},
    "worker": {"worker", "engine"},
    "service": {"service", "worker", "engine"},
    "backprop": set(OURS),
}
ENGINE_THIRD_PARTY = {"numpy"}
# Only these may import `backprop`, besides backprop itself.
BACKPROP_USERS = ("tests", "bench", "scripts")
NOT_SOURCE = {".venv", "venv", ".git", "build", "dist", "var"}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) for every import in `path`: `import a.b` gives a.b, `from a import b` gives a.b.
    Relative imports stay inside their package and are left out."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def python_files(directory: Path, root: Path = ROOT) -> list[Path]:
    return sorted(
        path
        for path in directory.rglob("*.py")
        if not NOT_SOURCE.intersection(path.relative_to(root).parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    )


def offences(directory: Path, allowed: set[str], root: Path = ROOT) -> list[str]:
    """`file:line imports name` for each import of one of our packages that is not in `allowed`."""
    return [
        f"{path.relative_to(root)}:{line} imports {name}"
        for path in python_files(directory, root)
        for line, name in imports(path)
        if name.split(".")[0] in OURS and name.split(".")[0] not in allowed
    ]


@pytest.mark.parametrize("package", OURS)
def test_layering_package_imports_only_lower_layers(package: str) -> None:
    assert offences(ROOT / package, MAY_IMPORT[package]) == []


def test_layering_engine_imports_only_numpy_and_the_standard_library() -> None:
    allowed = {"engine", "__future__", *ENGINE_THIRD_PARTY, *sys.stdlib_module_names}
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in python_files(ROOT / "engine")
        for line, module in imports(path)
        if module.split(".")[0] not in allowed
    ]
    assert found == []


def test_layering_only_tests_bench_and_scripts_import_backprop() -> None:
    users = [
        path
        for path in python_files(ROOT)
        if path.relative_to(ROOT).parts[0] not in ("backprop", *BACKPROP_USERS)
    ]
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in users
        for line, module in imports(path)
        if module.split(".")[0] == "backprop"
    ]
    assert found == []


def test_layering_offences_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "late.py").write_text(
        "import os\nfrom engine import Training\n\n\n"
        "def late() -> None:\n    from service.settings import get_settings\n"
    )
    found = offences(tmp_path / "worker", MAY_IMPORT["worker"], root=tmp_path)
    assert found == ["worker/late.py:6 imports service.settings.get_settings"]


def test_layering_importing_backprop_loads_no_server_code() -> None:
    heavy = ("fastapi", "uvicorn", "starlette", "rq", "redis", "engine", "worker", "service")
    script = "import sys, backprop; print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(run.stdout.split())
    assert loaded.isdisjoint(heavy), sorted(loaded.intersection(heavy))


def test_layering_service_never_uses_worker_keys() -> None:
    """The service reaches Redis state only through worker's Store and queue functions, never its key names."""
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in python_files(ROOT / "service")
        for line, name in imports(path)
        if name == "worker.keys" or name.startswith("worker.keys.")
    ]
    assert found == []
