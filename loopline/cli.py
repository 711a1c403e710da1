"""The ``loopline`` command.

Settings are built once here, at the edge, and passed down. Every subcommand
is one function registered with :func:`command`; to add one::

    def _demo_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--events", type=int, default=1000)

    @command("demo", "run the whole loop on the local stack", _demo_arguments)
    def demo(args: argparse.Namespace, settings: Settings) -> int:
        ...
        return 0

Errors Loopline raises on purpose (:class:`LooplineError`) end the command
with a clear message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loopline import __version__
from loopline.config.cli import service_group, settings_for
from loopline.contracts.errors import ConfigError, LooplineError
from loopline.contracts.settings import Settings

EXIT_OK = 0
EXIT_NOT_ALL_UP = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

Run = Callable[[argparse.Namespace, Settings], int]
Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Run
    arguments: Arguments | None = None


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Arguments | None = None) -> Callable[[Run], Run]:
    """Register ``run`` as the subcommand ``name``."""

    def register(run: Run) -> Run:
        if name in COMMANDS:
            raise ConfigError(f"subcommand {name!r} registered twice; give it another name")
        COMMANDS[name] = Command(name, help, run, arguments)
        return run

    return register


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- stack --------------------------------------------------------------------------
# Components add their own subcommands through `register(subparsers)`; their
# handlers read the settings from `args.settings` and return an exit code.
COMPONENT_COMMANDS = (
    "loopline.featurerepo.commands",
    "loopline.security.commands",
    "loopline.streams.commands",
    "loopline.streams.drift.commands",
    "loopline.serving.commands",
    "loopline.trainer.commands",
    "loopline.trainer.rollout.commands",
    "loopline.trainer.policy.service",
    "loopline.trainer.rollout.watch_loop",
)


# Subcommands import their heavy modules (the Kafka client, ...) when they run,
# so `loopline --help` and unrelated subcommands stay fast.
def _up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fetch-only",
        action="store_true",
        help="only download the Kafka jars (for CI warm-up); start nothing",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="TLS and logins on Kafka (SASL_SSL, SCRAM) and Redis (ACL users), ACLs per "
        "service, certificates and secrets generated under <state_dir>/secure",
    )
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="also Prometheus scraping every component (stack.prometheus_port), with the "
        "alert rules, and Grafana with the Loopline dashboard where it is installed",
    )
    parser.add_argument(
        "--redis-cluster",
        type=int,
        metavar="N",
        help="a Redis Cluster of N >= 3 masters on redis.port and the ports after it, "
        "instead of one Redis (sets stack.redis_cluster_masters and redis.cluster)",
    )
    parser.add_argument(
        "--redis-replicas",
        type=int,
        metavar="R",
        help="with --redis-cluster: R replicas per master (stack.redis_cluster_replicas)",
    )
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="also an MLflow tracking server (SQLite, artifacts under <state_dir>/mlflow) on "
        "stack.mlflow_port, for registry.mlflow_tracking_uri",
    )


@command("up", "start Kafka and Redis (or reuse running ones) and create the topics", _up_arguments)
def up(args: argparse.Namespace, settings: Settings) -> int:
    from loopline.stack import Stack

    if args.secure or settings.stack.secure:
        from loopline.stack.secure import secure_settings

        settings = secure_settings(settings)
    if args.redis_cluster is not None or args.redis_replicas is not None:
        settings = _with_redis_cluster(settings, args.redis_cluster, args.redis_replicas)
    stack = Stack(settings, progress=_progress)
    if args.fetch_only:
        lib = stack.fetch()
        print(f"kafka {settings.stack.kafka_version} jars ready in {lib}")
        return EXIT_OK
    status = stack.up(mlflow=args.mlflow)
    print(status.describe())
    if status.mlflow is not None:
        print(f"mlflow: set registry.mlflow_tracking_uri=http://{status.mlflow.address}")
    if settings.stack.secure:
        from loopline.stack.secure import finish_secure_up

        print(finish_secure_up(settings))
    if args.monitoring:
        from loopline.stack.monitoring import Monitoring, describe

        print(describe(Monitoring(settings, progress=_progress).up()))
    return EXIT_OK


def _with_redis_cluster(settings: Settings, masters: int | None, replicas: int | None) -> Settings:
    from loopline.config.loader import apply_layers

    if masters is None:
        raise ConfigError("--redis-replicas needs --redis-cluster N")
    stack: dict[str, object] = {"redis_cluster_masters": masters}
    if replicas is not None:
        stack["redis_cluster_replicas"] = replicas
    return apply_layers(settings, {"stack": stack, "redis": {"cluster": True}})


@command("down", "stop what `loopline up` started (never a reused server)")
def down(args: argparse.Namespace, settings: Settings) -> int:
    from loopline.stack import Stack
    from loopline.stack.monitoring import Monitoring

    stopped = Monitoring(settings, progress=_progress).down()
    stopped += Stack(settings, progress=_progress).down()
    print("\n".join(stopped) if stopped else "nothing started by loopline is running")
    return EXIT_OK


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secure", action="store_true", help="the stack `loopline up --secure` started"
    )


@command(
    "status", "show Kafka, Redis and the topics; exit 0 only when all are up", _status_arguments
)
def status(args: argparse.Namespace, settings: Settings) -> int:
    from loopline.stack import Stack

    if args.secure or settings.stack.secure:
        from loopline.stack.secure import secure_settings

        settings = secure_settings(settings)
    from loopline.stack.monitoring import Monitoring, describe

    result = Stack(settings).status()
    print(result.describe())
    print(describe(Monitoring(settings).status()))
    return EXIT_OK if result.all_up else EXIT_NOT_ALL_UP


# -- demo ---------------------------------------------------------------------------
def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live-s", type=float, default=150.0, help="live traffic, seconds")
    parser.add_argument("--history-s", type=float, default=600.0, help="replayed history, seconds")
    parser.add_argument(
        "--rate", type=float, default=120.0, help="scored events per second (the simulator's rate)"
    )
    parser.add_argument("--seed", type=int, default=11, help="simulator seed")
    parser.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        default=[],
        help="a scenario knob of the repo's simulator, over its DEMO_PARAMS (repeatable)",
    )
    parser.add_argument(
        "--grace-s", type=float, default=45.0, help="extra live time allowed for the loop to close"
    )
    parser.add_argument(
        "--publish-as",
        choices=("champion", "canary", "shadow"),
        default="champion",
        help="how the retrained model goes live: at once (champion), or as a canary or "
        "shadow rollout that `loopline run rollout` promotes from per-arm labels",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="run on the secure stack (loopline up --secure): every service with its own "
        "Kafka and Redis login, gRPC over TLS with a token, signed models",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--no-console", action="store_true", help="plain progress lines only")
    parser.add_argument("--report-dir", type=Path, help="where report.html goes (default: run dir)")


@command("demo", "run the whole loop on the local stack and report what happened", _demo_arguments)
def demo(args: argparse.Namespace, settings: Settings) -> int:
    from loopline.demo.config import DemoConfig
    from loopline.demo.runner import run_demo
    from loopline.simulation.commands import parse_params

    config = DemoConfig(
        seed=args.seed,
        history_s=args.history_s,
        live_s=args.live_s,
        rate=args.rate,
        params=parse_params(args.param),
        grace_s=args.grace_s,
        publish_as=args.publish_as,
        keep=args.keep,
        console=not args.no_console,
        report_dir=args.report_dir,
    )
    if args.secure:
        from loopline.stack.secure import secure_settings

        settings = secure_settings(settings)
    return run_demo(settings, config, say=lambda m: print(m, file=sys.stderr, flush=True))


# -- plumbing -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopline",
        description="Loopline: a streaming real-time ML loop (Kafka, Redis, ONNX, River).",
    )
    parser.add_argument("--version", action="version", version=f"loopline {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML or YAML settings file, over the repo's loopline.yaml "
        "(LOOPLINE_<SECTION>__<KEY> environment variables override both)",
    )
    _repo_option(parser, argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.arguments is not None:
            cmd.arguments(sub)
    # Long-lived services share one `run` group; each component adds its own.
    subparsers.add_parser("run", help="run one Loopline service (for real deployments)")
    service_group(subparsers)
    for module in COMPONENT_COMMANDS:
        importlib.import_module(module).register(subparsers)
    for sub in _all_subparsers(parser):
        _repo_option(sub, argparse.SUPPRESS)
    return parser


def _repo_option(parser: argparse.ArgumentParser, default: object) -> None:
    if any("--repo" in a.option_strings for a in parser._actions):
        return
    parser.add_argument(
        "--repo",
        metavar="PATH",
        default=default,
        help="feature repo to run on (default: $LOOPLINE_REPO, else the current folder if it "
        "holds loopline.yaml, else the fraud example)",
    )


def _all_subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += [sub, *_all_subparsers(sub)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_for(args)
        if args.command in COMMANDS:
            return COMMANDS[args.command].run(args, settings)
        args.settings = settings
        return int(args.func(args))
    except LooplineError as e:
        print(f"loopline {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"loopline {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
