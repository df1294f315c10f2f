"""``inferd serve --workers N|auto`` and ``--pin-workers`` (docs/operations.md, "Workers"), and the hidden
flags a supervisor starts each worker with."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from server.workers.cpu import auto_workers, parse_workers, usable_cpus, visible_gpus

if TYPE_CHECKING:
    from server.workers.worker_mode import WorkerRole


def _workers(text: str) -> int | str:
    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_workers_flags(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("workers (several server processes on one port)")
    group.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="run N server processes sharing the port (SO_REUSEPORT) under a supervisor that restarts them, "
        "fans model control out to all and sums their statistics; auto = one per usable CPU (one per GPU with "
        "--device cuda…). Each holds its own copy of every model (default 1: one process)",
    )
    group.add_argument(
        "--pin-workers", action="store_true", help="pin worker i to one CPU (round-robin over the usable CPUs)"
    )
    group.add_argument(
        "--workers-state-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="with --workers: keep a JSON file with each worker's pid, state and private control socket",
    )
    # set by a supervisor on the command lines of its workers only
    group.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    group.add_argument("--worker-control", default=None, help=argparse.SUPPRESS)
    group.add_argument("--supervisor", default=None, help=argparse.SUPPRESS)
    group.add_argument("--worker-control-elsewhere", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(serve_parser=serve, serve_argv=None)


def worker_role(args: argparse.Namespace) -> WorkerRole | None:
    """This process is a supervisor's worker (the hidden flags); None = a server on its own."""
    if getattr(args, "worker_index", None) is None:
        return None
    from server.workers.worker_mode import WorkerRole  # only in a worker: keeps `inferd --help` cheap

    return WorkerRole(args.worker_index, args.worker_control, args.supervisor, args.worker_control_elsewhere)


def worker_count(args: argparse.Namespace) -> int:
    """``--workers`` as a number (``auto`` resolved on this machine)."""
    if args.workers == "auto":
        return auto_workers(args.device, len(usable_cpus()), visible_gpus(os.environ))
    return int(args.workers)


def refused_with_workers(args: argparse.Namespace) -> str | None:
    """Combinations --workers does not support yet, as the error to print."""
    if args.admin_port is not None and (
        getattr(args, "auth_config", None) is not None or getattr(args, "tls_cert", None) is not None
    ):
        return (
            "--admin-port with --auth-config or --tls-* is not supported with --workers yet "
            "(the supervisor would serve the admin port without them)"
        )
    return None


def supervise(args: argparse.Namespace, count: int) -> int:
    """Run the supervisor until a signal; its exit code."""
    import asyncio

    from server.workers.supervisor import Supervisor

    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    refused = refused_with_workers(args)
    if refused is not None:
        print(f"inferd: {refused}", file=sys.stderr)
        return 2
    cpus = usable_cpus() if args.pin_workers else None

    async def run() -> int:
        return await Supervisor(args, count, cpus).run()

    return asyncio.run(run())
