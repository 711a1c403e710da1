"""A model's input vector from a Feast response, as a Feast user would write it by hand.

Feast returns stored feature values; the request-time transforms (ratios,
ages) and the model's column order are the caller's code. This module is that
code, driven by a *vector spec* that ``benchmarks/peer_feast.py`` derives from
the Loopline feature set, so both sides feed the model the same vector.

It imports nothing but the standard library: it runs in the Feast venv
(``feast_worker.py``) and in Loopline's tests alike.

A spec is a list of steps, one per model input column, in the model's order:

- ``["stored", ref, default]``: a stored feature (``ref`` like ``card__amount_mean_24h``,
  Feast's full feature name), ``default`` when the entity is unknown;
- ``["request", name]``: a request field;
- ``[kind, [arg, ...], default]`` for the derived kinds ``field``, ``ratio``,
  ``difference``, ``product``, ``log1p``, ``age``; each ``arg`` is
  ``["stored", ref, default]`` or ``["request", name]``.

>>> spec = [
...     ["stored", "card__n", 0.0],
...     ["ratio", [["request", "amount"], ["stored", "card__mean", 0.0]], 1.0],
...     ["age", [["stored", "card__last_t", 0.0]], -1.0],
... ]
>>> vector(spec, {"card__n": 2.0, "card__mean": 0.0, "card__last_t": 90.0}, {"amount": 5.0}, 100.0)
[2.0, 1.0, 10.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Spec = Sequence[Sequence[Any]]


def _value(arg: Sequence[Any], stored: Mapping[str, Any], request: Mapping[str, Any]) -> float:
    if arg[0] == "request":
        return float(request[arg[1]])
    raw = stored.get(arg[1])
    # Feast answers None for an entity it does not hold: the feature's default.
    return float(arg[2]) if raw is None else float(raw)


def vector(
    spec: Spec, stored: Mapping[str, Any], request: Mapping[str, Any], now: float
) -> list[float]:
    """The model's input row: ``stored`` maps full feature names to values."""
    out: list[float] = []
    for step in spec:
        kind = step[0]
        if kind in ("stored", "request"):
            out.append(_value(step, stored, request))
            continue
        args, default = step[1], float(step[2])
        vals = [_value(a, stored, request) for a in args]
        if kind == "field":
            out.append(vals[0])
        elif kind == "ratio":
            out.append(vals[0] / vals[1] if vals[1] else default)
        elif kind == "difference":
            out.append(vals[0] - vals[1])
        elif kind == "product":
            out.append(vals[0] * vals[1])
        elif kind == "log1p":
            out.append(math.log1p(max(vals[0], 0.0)))
        elif kind == "age":
            out.append(now - vals[0] if vals[0] > 0 else default)
        else:
            raise ValueError(f"unknown step kind {kind!r} in the vector spec")
    return out
