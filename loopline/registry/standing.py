"""Where each registry version stands: what serves, what was replaced, what was refused.

A manifest records only the gate's verdict (``candidate`` or ``rejected``);
which version serves is told by the aliases. Reports show the two together,
so a version is never shown as a candidate after it has served and been
replaced.

>>> from types import SimpleNamespace as V
>>> vs = [V(manifest=V(version=n, status=s)) for n, s in
...       (("1", "candidate"), ("2", "rejected"), ("3", "candidate"), ("4", "candidate"))]
>>> version_standing(vs, {"champion": "3"})
{'1': 'retired', '2': 'rejected', '3': 'champion', '4': 'candidate'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CHAMPION = "champion"


def version_standing(versions: Iterable[Any], aliases: Mapping[str, str]) -> dict[str, str]:
    """Version -> its aliases (e.g. ``champion``), else ``rejected``, ``retired``
    (an accepted version older than the champion) or ``candidate``.

    ``versions`` are registry versions (``.manifest.version``, ``.manifest.status``)
    in publication order, as the registry lists them."""
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    out: dict[str, str] = {}
    champion_seen = False
    ordered = list(versions)
    champion = aliases.get(CHAMPION)
    for v in reversed(ordered):  # newest first: what precedes the champion is retired
        m = v.manifest
        if m.version in by_version:
            out[m.version] = ", ".join(sorted(by_version[m.version]))
        elif m.status == "rejected":
            out[m.version] = "rejected"
        else:
            out[m.version] = "retired" if champion_seen else "candidate"
        champion_seen = champion_seen or m.version == champion
    return {v.manifest.version: out[v.manifest.version] for v in ordered}
