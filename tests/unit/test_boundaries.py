"""The import rules of docs/architecture.md, checked on the source tree.

- ``contracts`` declares; it imports nothing of Loopline's but itself and no framework.
- The shared libraries (feature core, registry, rollout, storage, config, kafka,
  telemetry, feature repos, simulation) import contracts and each other, never a component, the
  stack (save a CLI handler, ``commands.py``), the demo or the CLI.
- The components ``streams``, ``serving`` and ``trainer`` share contracts and
  libraries, never each other, the stack, the demo or the CLI.
- Only a dataflow's engine adapter (``bytewax_*.py`` or its ``run.py``) imports Bytewax.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {"streams": ROOT / "streams", "serving": ROOT / "serving", "trainer": ROOT / "trainer"}
LIBRARIES = (
    "featurecore",
    "registry",
    "rollout",
    "security",
    "storage",
    "config",
    "kafka",
    "telemetry",
    "featurerepo",
    "simulation",
)
ORCHESTRATION = {"stack", "demo", "cli"}
# Contracts are imported everywhere, so they must not pull in frameworks.
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


def _ours(name: str) -> str:
    """The first-level package of one of Loopline's modules ('' for anything else)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "loopline" and len(parts) > 1 else ""


def _offenders(folder: Path, allowed: set[str], extra=lambda path, name: False) -> list[str]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        for name in _imports(path):
            pkg = _ours(name)
            if (pkg and pkg not in allowed) or extra(path, name):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


def test_contracts_import_only_contracts_and_no_framework() -> None:
    offenders = _offenders(
        ROOT / "loopline" / "contracts",
        {"contracts"},
        lambda _path, name: name.split(".")[0] in FRAMEWORKS,
    )
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("library", LIBRARIES)
def test_libraries_import_no_component_and_no_orchestration(library: str) -> None:
    allowed = {"contracts", *LIBRARIES, "v1", "oip"}
    offenders = _offenders(
        ROOT / "loopline" / library,
        allowed | {"stack"},
        lambda path, name: _ours(name) == "stack" and path.name != "commands.py",
    )
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_component_imports_no_other_component(component: str) -> None:
    allowed = {"contracts", *LIBRARIES, "v1", "oip", component}
    offenders = _offenders(COMPONENTS[component], allowed)
    assert not offenders, "\n".join(offenders)


def test_only_engine_adapters_import_bytewax() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in (ROOT / "loopline", *COMPONENTS.values())
        for path in sorted(folder.rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] == "bytewax"
        and not (path.name.startswith("bytewax_") or path.name == "run.py")
    ]
    assert not offenders, "\n".join(offenders)
