"""The protocol core imports nothing but the standard library and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import django_gearman.protocol

PROTOCOL_DIR = Path(django_gearman.protocol.__file__).parent


def test_protocol_imports_only_stdlib_and_itself() -> None:
    offenders = []
    for path in sorted(PROTOCOL_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside protocol/ only (one dot)
                    if node.level > 1:
                        offenders.append(f"{path.name}: from {'.' * node.level}{node.module}")
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names or top in {"socket", "asyncio", "selectors", "select", "ssl"}:
                    offenders.append(f"{path.name}: import {name}")
    assert offenders == []
    assert len(list(PROTOCOL_DIR.glob("*.py"))) >= 6
