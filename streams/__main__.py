"""``python -m loopline.streams``: the streams subcommands without the full CLI.

Same subcommands and arguments as ``loopline`` (see ``commands.py``); used by
the integration tests to start the flow as a real process.
"""

from __future__ import annotations

import argparse
import sys

from loopline.config.cli import settings_for
from loopline.contracts.errors import LooplineError
from loopline.streams import commands
from loopline.streams.drift import commands as drift_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopline.streams")
    parser.add_argument("--config", metavar="FILE", help="TOML or YAML settings file")
    parser.add_argument("--repo", metavar="PATH", help="feature repo (as for `loopline`)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(subparsers)
    # `loopline` registers drift's commands itself; local clusters start `run drift` here.
    drift_commands.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, settings_for(args)))
    except LooplineError as e:
        print(f"loopline {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
