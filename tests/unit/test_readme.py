"""The README's definitions example is real code: it loads and compiles as written."""

from __future__ import annotations

import re
from pathlib import Path

from loopline.featurecore.project import Project

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_definitions_example_compiles() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "EventSource(" in b)
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    project = Project.of("shop", namespace.values())
    model = project.model()
    assert (model.name, model.task) == ("spend", "regression")
    assert project.feature_set().model_features == (
        "user.clicks_1h", "user.spend_1h", "user.app_clicks_1h", "user.since_last",
        "price", "price_vs_spend",
    )  # fmt: skip
