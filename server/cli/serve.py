"""``inferd serve``: run the server until a signal, with a graceful drain (a second signal stops at once)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from server.cli.security_flags import SecurityFlagError, audit_options, auth_options, tls_options
from server.cli.telemetry_flags import telemetry_options
from server.cli.transport_flags import transport_limits
from server.cli.workers_flags import supervise, worker_count, worker_role

if TYPE_CHECKING:
    from server.app import ServerOptions


def engine_list(text: str) -> tuple[str, ...]:
    """``--allowed-engines onnxruntime,torch``: known engine names, comma-separated (at least one)."""
    from engines.base import BACKENDS

    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'nothing'} is not an engine; list some of: {', '.join(BACKENDS)}"
        )
    return names


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that restrict what the repository's artefacts may run (docs/operations.md, Security model)."""
    parser.add_argument(
        "--allowed-engines",
        type=engine_list,
        default=None,
        metavar="LIST",
        help="engines models may be served by, comma-separated (default: all); e.g. onnxruntime,torch,tensorrt "
        "refuses model.py (python, generative) models, which are code that can do anything the server can",
    )


def server_options(args: argparse.Namespace) -> ServerOptions:
    """The parsed ``inferd serve`` flags as the server's options."""
    from server.app import ServerOptions

    return ServerOptions(
        repository=args.repository,
        host=args.host,
        port=args.port,
        max_receive_message_mb=args.max_receive_message_mb,
        max_send_message_mb=args.max_send_message_mb,
        max_request_elements=args.max_request_elements,
        reuse_port=args.reuse_port,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
        unload_drain_seconds=args.unload_drain_seconds,
        admin_port=args.admin_port,
        poll_interval=args.poll_interval,
        device=args.device,
        trt_auto_build=args.trt_auto_build,
        trt_cache_dir=args.trt_cache_dir,
        gpu_memory_fraction=args.gpu_memory_fraction,
        transport=transport_limits(args),
        telemetry=telemetry_options(args),
        allowed_engines=getattr(args, "allowed_engines", None),
        tls=tls_options(args),
        audit_log=audit_options(args),
        auth=auth_options(args),
        worker=worker_role(args),
    )


def _write_port(path: Path, port: int) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(str(port))
    os.replace(partial, path)  # readers never see an empty file


def serve(args: argparse.Namespace) -> int:
    from server.app import InferdServer, StartupError
    from server.models.repository import RepositoryError

    if getattr(args, "workers", 1) != 1 and worker_role(args) is None:
        count = worker_count(args)
        if count > 1:
            return supervise(args, count)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        options = server_options(args)
    except SecurityFlagError as exc:
        print(f"inferd: {exc}", file=sys.stderr)
        return 2

    abandoned: list[bool] = []
    log = logging.getLogger("inferd")

    def received(sig: int) -> int:
        log.info("shutdown: %s received", signal.Signals(sig).name)
        return sig

    async def run() -> int:
        loop = asyncio.get_running_loop()
        signals = asyncio.Queue[int]()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.put_nowait, sig)
        try:
            server = InferdServer(options)
        except RepositoryError as exc:
            print(f"inferd: {exc}", file=sys.stderr)
            return 2
        starting = loop.create_task(server.start())
        first_signal = loop.create_task(signals.get())
        await asyncio.wait({starting, first_signal}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            try:
                port = starting.result()
            except StartupError as exc:
                print(f"inferd: {exc}", file=sys.stderr)
                return 2
            if args.metrics_port_file and server.metrics_port:
                _write_port(args.metrics_port_file, server.metrics_port)
            if args.port_file:
                _write_port(args.port_file, port)
            received(await first_signal)
        else:
            received(first_signal.result())
            # nothing has been SERVING yet: abandon the loads (their threads finish in the background)
            log.warning("signal during start-up: stopping without loading the rest")
            abandoned.append(True)
            starting.cancel()
            results = await asyncio.gather(starting, return_exceptions=True)
            if isinstance(results[0], StartupError):
                print(f"inferd: {results[0]}", file=sys.stderr)
                return 2
        # first signal: graceful drain; a second one while draining stops at once
        stopping = loop.create_task(server.stop(drain=starting.done() and not starting.cancelled()))
        second_signal = loop.create_task(signals.get())
        await asyncio.wait({stopping, second_signal}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            received(second_signal.result())
            log.warning("second signal: stopping without waiting for in-flight requests")
            logging.shutdown()
            os._exit(1)
        second_signal.cancel()
        stopping.result()  # a failed stop is an error exit, not a silent one
        log.info("shutdown: exit")
        return 0

    code = asyncio.run(run())
    if abandoned:
        # model loads abandoned at start-up may still be running in their threads: do not wait for them
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
