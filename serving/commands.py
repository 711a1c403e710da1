"""``loopline run serve``: the gRPC inference server, configured by file and environment.

:func:`register` adds ``serve`` to the ``run`` subcommands; the handler gets
the parsed arguments and the :class:`Settings` built at the edge. Flags
override single ``[serving]`` settings for convenience; everything else comes
from the TOML file (``--config``) and ``LOOPLINE_SERVING__*`` variables.

``--replicas N`` runs N processes on one port (``serving.processes``). Every
replica follows the registry alias and the rollout plan on its own, so N
processes here and N pods behind a load balancer (sharing the registry and
Redis) behave the same: all serve the new champion within the same bound, and
a canary plan gives an entity the same arm on every replica.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from loopline.config.cli import service_group
from loopline.contracts.settings import Settings

# Flag -> ServingSettings field.
OVERRIDES = {
    "host": "host",
    "port": "port",
    "processes": "processes",
    "threads": "threads",
    "metrics_port": "metrics_port",
    "alias": "alias",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run serve`` (the ``run`` group is shared with the other components)."""
    parser = service_group(subparsers).add_parser(
        "serve",
        help="serve predictions over gRPC (Loopline v1, Open Inference Protocol v2, health)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=run_serve)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (serving.host)")
    parser.add_argument("--port", type=int, help="gRPC port; 0 picks a free one (serving.port)")
    # `--processes` is the flag's older name, still accepted.
    parser.add_argument(
        "--replicas",
        "--processes",
        dest="processes",
        type=int,
        metavar="N",
        help="serving replicas: N processes sharing the port with SO_REUSEPORT "
        "(serving.processes); in production, one per host or pod behind a load balancer",
    )
    parser.add_argument("--threads", type=int, help="RPC threads per process (serving.threads)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus port; 0 picks a free one, -1 disables (serving.metrics_port)",
    )
    parser.add_argument(
        "--model", help="model name in the registry (default: the repo's model, project.model)"
    )
    parser.add_argument("--alias", help="registry alias to serve and follow (serving.alias)")


def apply_overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    changes = {
        field: getattr(args, flag)
        for flag, field in OVERRIDES.items()
        if getattr(args, flag, None) is not None
    }
    if getattr(args, "model", None):
        project = dataclasses.replace(settings.project, model=args.model)
        settings = dataclasses.replace(settings, project=project)
    if not changes:
        return settings
    return dataclasses.replace(settings, serving=dataclasses.replace(settings.serving, **changes))


def run_serve(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from loopline.serving.supervisor import serve

    base = settings if settings is not None else args.settings
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    return serve(
        apply_overrides(args, base), on_ready=lambda line: print(line, file=sys.stderr, flush=True)
    )
