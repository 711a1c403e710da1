"""Every docstring example in Loopline runs as a test."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

# Mapped from separate source folders, so listed rather than discovered.
PACKAGES = (
    "loopline",
    "loopline.config",
    "loopline.contracts",
    "loopline.featurecore",
    "loopline.featurerepo",
    "loopline.kafka",
    "loopline.registry",
    "loopline.rollout",
    "loopline.security",
    "loopline.storage",
    "loopline.telemetry",
    "loopline.stack",
    "loopline.demo",
    "loopline.simulation",
    "loopline.streams",
    "loopline.serving",
    "loopline.trainer",
)


def _modules() -> list[str]:
    names = set(PACKAGES)
    for pkg in PACKAGES[1:]:
        path = importlib.import_module(pkg).__path__
        names.update(i.name for i in pkgutil.walk_packages(path, prefix=pkg + "."))
    skip = ("_pb2", "_pb2_grpc", "__main__")
    return sorted(n for n in names if not n.rsplit(".", 1)[-1].endswith(skip))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
