"""Faults under load, with what was lost: one JSON line per scenario.

Each scenario (``benchmarks/support/chaos_scenarios/``) runs events,
Predict calls and outcomes, injects one fault (a kill -9, a full disk, a
backlog, overload, poison pills), then checks that nothing acknowledged was
lost and that the loop recovered, and prints::

    {"scenario": ..., "events_sent": ..., "events_acked": ..., "events_lost": ...,
     "predict_calls": ..., "predict_failed": ..., "predict_degraded": ...,
     "recovery_s": ..., "invariant_ok": ..., "details": {...}}

Run: ``python benchmarks/chaos.py`` (all scenarios), ``--scenario NAME``
(repeatable) for some, ``--list`` to see them. Needs ``loopline up``.
Exit status 1 when any invariant failed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from support.chaos_scenarios import ChaosOptions, scenarios


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # A SystemExit unwinds the scenario's `with` blocks: its private servers stop.
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    found = scenarios()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(found), default=None)
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--seconds", type=float, default=ChaosOptions.seconds)
    parser.add_argument("--events-per-s", type=float, default=ChaosOptions.events_per_s)
    parser.add_argument("--seed", type=int, default=ChaosOptions.seed)
    parser.add_argument(
        "--backlog-events",
        type=int,
        default=ChaosOptions.backlog_events,
        help="events the backlog scenario dumps at once (default 1,000,000)",
    )
    args = parser.parse_args()
    if args.list:
        for name, module in found.items():
            print(f"{name:<24} {module.SUMMARY}")
        return 0
    options = ChaosOptions(
        seconds=args.seconds,
        events_per_s=args.events_per_s,
        seed=args.seed,
        backlog_events=args.backlog_events,
    )
    failed = 0
    for name in args.scenario or list(found):
        started = time.monotonic()
        print(f"# {name}: {found[name].SUMMARY}", file=sys.stderr, flush=True)
        result = found[name].run(options)
        failed += not result.invariant_ok
        print(json.dumps(result.as_json()), flush=True)
        print(f"# {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
