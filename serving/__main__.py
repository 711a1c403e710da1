"""``python -m loopline.serving [--config FILE] [flags]``: the same as ``loopline run serve``."""

from __future__ import annotations

import argparse
import sys

from loopline.config.loader import load_settings
from loopline.contracts.errors import LooplineError
from loopline.serving.commands import add_arguments, run_serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loopline.serving")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    add_arguments(parser)
    args = parser.parse_args()
    try:
        return run_serve(args, load_settings(args.config))
    except LooplineError as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
