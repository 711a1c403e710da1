"""streams, serving and trainer share contracts, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {"streams": "streams", "serving": "serving", "trainer": "trainer"}
# Pure contracts must not pull in frameworks: they are imported everywhere.
FRAMEWORKS = {"bytewax", "grpc", "onnxruntime", "lightgbm", "confluent_kafka", "redis", "river"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_component_imports_no_other_component(component: str) -> None:
    others = {f"loopline.{c}" for c in COMPONENTS if c != component}
    offenders = []
    for path in sorted((ROOT / COMPONENTS[component]).rglob("*.py")):
        for name in _imports(path):
            if any(name == o or name.startswith(o + ".") for o in others):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_contracts_import_no_component_and_no_framework() -> None:
    offenders = []
    for path in sorted((ROOT / "loopline" / "contracts").rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            comp = name.split(".")[1] if name.startswith("loopline.") and "." in name else ""
            if comp in COMPONENTS or comp in {"stack", "cli"} or top in FRAMEWORKS:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)
