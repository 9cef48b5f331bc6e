"""The service reaches Redis state only through worker's Store and queue functions, never its key names."""

from __future__ import annotations

import ast
from pathlib import Path

import service


def test_service_never_uses_worker_keys() -> None:
    offenders: list[str] = []
    for path in sorted(Path(service.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("worker"):
                if node.module == "worker.keys" or any(alias.name == "keys" for alias in node.names):
                    offenders.append(f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(alias.name == "worker.keys" for alias in node.names):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
