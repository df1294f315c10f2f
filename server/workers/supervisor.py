"""``inferd serve --workers N``: N server processes share one port (SO_REUSEPORT) under this supervisor,
which serves no inference. It keeps the port reserved, starts and restarts the workers, fans model control
out to all of them (and replays it to a restarted one), aggregates their health and sums their statistics,
serves the merged /metrics, and drains them all on SIGTERM (docs/operations.md, "Workers")."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from server.workers.control_fanout import ControlFanout, Target, call_all
from server.workers.control_log import ControlLog
from server.workers.cpu import pin_cpu
from server.workers.health_view import cluster_verdict
from server.workers.ports import WorkerStartError, reserve_port, write_atomically
from server.workers.process import SUPERVISOR_DESTS, Backoff, WorkerProcess, WorkerSpec, strip_options, worker_argv
from server.workers.worker_mode import INTERNAL_SERVICE, PRIVATE_DIR_PREFIX, SUPERVISOR_SOCKET, worker_files

if TYPE_CHECKING:
    from server.workers.aggregate_metrics import MetricsEndpoint

log = logging.getLogger("inferd.workers")
#: how often the supervisor reads every worker's own health
HEALTH_POLL_S = 0.2
#: the private sockets' reconnect backoff: a starting worker's socket appears within these
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 500)]
#: the wait for one replayed control call
REPLAY_TIMEOUT_S = 600.0


@dataclass
class Slot:
    """Worker ``index``: the process of the moment, and whether it serves (its main port is open)."""

    index: int
    socket_path: str
    channel: grpc.aio.Channel
    metrics_port_file: str | None
    process: WorkerProcess | None = None
    state: str = "starting"  # starting | serving | restarting | stopped
    restarts: int = 0
    open: bool = False
    first_open: asyncio.Event = field(default_factory=asyncio.Event)
    #: the cluster health last sent to this worker (JSON bytes)
    pushed: bytes | None = None

    def target(self) -> Target:
        return Target(self.index, self.channel)

    async def internal(self, method: str, request: bytes = b"{}", **kwargs: object) -> bytes:
        reply: bytes = await self.channel.unary_unary(f"/{INTERNAL_SERVICE}/{method}")(request, **kwargs)
        return reply


class Supervisor:
    def __init__(self, args: argparse.Namespace, count: int, cpus: list[int] | None) -> None:
        """``cpus``: pin worker i to ``cpus[i % len(cpus)]``; None = no pinning."""
        self.args = args
        self.count = count
        self.cpus = cpus
        self.serve_args = tuple(strip_options(args.serve_parser, args.serve_argv, SUPERVISOR_DESTS))
        self.dir = tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX)  # 0700: only this user reaches the sockets
        self.port = 0
        self.admin_port = 0
        self.slots: list[Slot] = []
        self.control_log = ControlLog()
        self._control_lock = asyncio.Lock()
        self._health_lock = asyncio.Lock()
        self._stopping = False
        self._fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._servers: list[grpc.aio.Server] = []
        self._metrics: MetricsEndpoint | None = None
        self._health_task: asyncio.Task[None] | None = None

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        signals = asyncio.Queue[int]()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.put_nowait, sig)
        reserved: socket.socket | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            reserved = reserve_port(self.args.host, self.args.port)
            self.port = reserved.getsockname()[1]
            await self._start_control_servers()
            self._make_slots()
            tasks = [loop.create_task(self._keep_running(slot)) for slot in self.slots]
            all_open: asyncio.Future[list[bool]] = asyncio.gather(*(s.first_open.wait() for s in self.slots))
            first_signal: asyncio.Future[int] = loop.create_task(signals.get())
            waits: set[asyncio.Future[object]] = {all_open, first_signal, self._fatal}  # type: ignore[arg-type]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if self._fatal.done():
                for waiter in (all_open, first_signal):
                    waiter.cancel()
                await asyncio.gather(all_open, first_signal, return_exceptions=True)
                await self._shutdown(signals, reason="a worker failed to start")
                print(f"inferd: {self._fatal.result()}", file=sys.stderr)
                return 2
            if all_open.done():
                await self._serving()
                self._health_task = loop.create_task(self._health_loop())
                tasks.append(self._health_task)
                ends: set[asyncio.Future[object]] = {first_signal, self._fatal}  # type: ignore[arg-type]
                await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            else:
                all_open.cancel()
                await asyncio.gather(all_open, return_exceptions=True)
            if first_signal.done():
                log.info("shutdown: %s received", signal.Signals(first_signal.result()).name)
            else:
                first_signal.cancel()
            return await self._shutdown(signals, reason="signal")
        except WorkerStartError as exc:
            print(f"inferd: {exc}", file=sys.stderr)
            return 2
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for server in self._servers:
                await server.stop(0)
            for slot in self.slots:
                await slot.channel.close()
            if self._metrics is not None:
                await asyncio.to_thread(self._metrics.stop)
            if reserved is not None:
                reserved.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _serving(self) -> None:
        """Every worker serves: the port file, the state file, one line."""
        host = self.args.host
        log.info(
            "inferd serving on %s:%d with %d workers (supervisor pid %d)", host, self.port, self.count, os.getpid()
        )
        if self.args.port_file:
            write_atomically(self.args.port_file, str(self.port))
        self._write_state()

    async def _shutdown(self, signals: asyncio.Queue[int], reason: str) -> int:
        """SIGTERM to every worker (each drains as a server on its own does); a second signal → SIGKILL."""
        self._stopping = True
        if self._health_task is not None:  # the workers' own health now only says they are stopping
            self._health_task.cancel()
        live = [s.process for s in self.slots if s.process is not None and s.process.process.returncode is None]
        log.info("shutdown (%s): SIGTERM to %d worker(s)", reason, len(live))
        for process in live:
            process.signal(signal.SIGTERM)
        waiting: asyncio.Future[list[int]] = asyncio.gather(*(p.wait() for p in live))
        second: asyncio.Future[int] = asyncio.ensure_future(signals.get())
        either: set[asyncio.Future[object]] = {waiting, second}  # type: ignore[arg-type]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            log.warning("second signal: SIGKILL to every worker")
            for process in live:
                process.signal(signal.SIGKILL)
            await waiting
            return 1
        second.cancel()
        codes = waiting.result()
        for slot in self.slots:
            slot.state = "stopped"
        self._write_state()
        log.info("shutdown: every worker exited (codes %s)", ", ".join(str(c) for c in codes))
        return 0

    # -- the workers ----------------------------------------------------------------------------

    def _make_slots(self) -> None:
        metrics = self._metrics is not None
        for index in range(self.count):
            socket_name, port_name = worker_files(index)
            path = os.path.join(self.dir, socket_name)
            channel = grpc.aio.insecure_channel(f"unix:{path}", options=_CHANNEL_OPTIONS)
            port_file = os.path.join(self.dir, port_name) if metrics else None
            self.slots.append(Slot(index, path, channel, port_file))

    def _spec(self, slot: Slot) -> WorkerSpec:
        return WorkerSpec(
            index=slot.index,
            serve_args=self.serve_args,
            port=self.port,
            control_socket=slot.socket_path,
            supervisor_socket=os.path.join(self.dir, SUPERVISOR_SOCKET),
            metrics_port_file=slot.metrics_port_file,
            control_elsewhere=self.args.admin_port is not None,
        )

    async def _keep_running(self, slot: Slot) -> None:
        """Start worker ``slot.index``; restart it whenever it dies unexpectedly (backoff, then replay)."""
        backoff = Backoff()
        first = True
        while not self._stopping:
            if slot.metrics_port_file is not None:
                Path(slot.metrics_port_file).unlink(missing_ok=True)
            cpu = pin_cpu(slot.index, self.cpus) if self.cpus else None
            try:
                process = await WorkerProcess.start(slot.index, worker_argv(self._spec(slot)), cpu)
            except OSError as exc:
                if first:
                    self._fail(f"worker {slot.index} could not be started: {exc}")
                    return
                log.warning("worker %d could not be started (%s); retrying", slot.index, exc)
                await asyncio.sleep(backoff.delay(0.0))
                continue
            slot.process = process
            slot.pushed = None
            started = time.monotonic()
            log.info(
                "worker %d: started (pid %d%s)", slot.index, process.pid, f", cpu {cpu}" if cpu is not None else ""
            )
            exited = asyncio.ensure_future(process.wait())
            bring_up = asyncio.ensure_future(self._bring_up(slot, replay=not first))
            await asyncio.wait({exited, bring_up}, return_when=asyncio.FIRST_COMPLETED)
            if bring_up.done() and bring_up.exception() is None:
                slot.state = "serving"
                slot.first_open.set()
                self._write_state()
            else:
                bring_up.cancel()
                failed = await asyncio.gather(bring_up, return_exceptions=True)
                if not exited.done():  # alive but it could not be brought up: it will not serve
                    log.warning("worker %d: start-up failed (%s); stopping it", slot.index, failed[0])
                    process.signal(signal.SIGKILL)
                code = await exited
                if first and not self._stopping:
                    self._fail(f"worker {slot.index} exited with code {code} before serving: {process.error()}")
                    return
            code = await exited
            slot.open = False
            if self._stopping:
                return
            first = False
            slot.restarts += 1
            slot.state = "restarting"
            self._write_state()
            delay = backoff.delay(time.monotonic() - started)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            log.warning(
                "worker %d (pid %d) exited with %s; restart %d in %.1fs",
                slot.index,
                process.pid,
                how,
                slot.restarts,
                delay,
            )
            await asyncio.sleep(delay)

    def _fail(self, why: str) -> None:
        """A worker failed before it ever served: the supervisor stops everything and exits 2."""
        if not self._fatal.done():
            self._fatal.set_result(why)

    async def _bring_up(self, slot: Slot, *, replay: bool) -> None:
        """Wait for its repository, replay the control log, push the cluster's health, then open its port."""
        await slot.internal("Loaded", wait_for_ready=True)
        async with self._control_lock:
            calls = self.control_log.calls() if replay else ()
            if calls:
                log.info("worker %d: replaying %d control call(s)", slot.index, len(calls))
            for call in calls:
                _, failures = await call_all([slot.target()], call.method, call.request, timeout=REPLAY_TIMEOUT_S)
                for failure in failures:
                    log.warning("replay of %s: %s", call.method, failure)
            await self._refresh_health(joining=slot)
            await slot.internal("Open")
            slot.open = True
        await self._refresh_health()
        log.info("worker %d: serving", slot.index)

    def _targets(self) -> list[Target]:
        return [s.target() for s in self.slots if s.open]

    # -- health ---------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            await self._refresh_health()

    async def _refresh_health(self, joining: Slot | None = None) -> None:
        """A model is SERVING on the shared port when every serving worker serves it: read each worker's own
        health, push the verdict to each worker whose last one differs."""
        async with self._health_lock:
            slots = [s for s in self.slots if s.open or s is joining]

            async def own(slot: Slot) -> dict[str, bool] | None:
                try:
                    return dict(json.loads(await slot.internal("OwnHealth", timeout=5.0)))
                except (grpc.aio.AioRpcError, ValueError):
                    return None  # dying or restarting: it serves no connection, so it has no say

            views = await asyncio.gather(*(own(s) for s in slots))
            payload = json.dumps(cluster_verdict(views), sort_keys=True).encode()
            for slot, view in zip(slots, views, strict=True):
                if view is None or slot.pushed == payload:
                    continue
                try:
                    await slot.internal("SetClusterHealth", payload, timeout=5.0)
                    slot.pushed = payload
                except grpc.aio.AioRpcError:
                    pass

    # -- the supervisor's own servers -----------------------------------------------------------

    async def _start_control_servers(self) -> None:
        fanout = ControlFanout(
            self._targets, self.control_log, self._control_lock, self._refresh_health, workers=lambda: self.count
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((fanout,))
        server.add_insecure_port(f"unix:{os.path.join(self.dir, SUPERVISOR_SOCKET)}")
        await server.start()
        self._servers.append(server)
        if self.args.admin_port is not None:
            admin = grpc.aio.server()
            admin.add_generic_rpc_handlers((fanout,))
            try:
                self.admin_port = admin.add_insecure_port(f"127.0.0.1:{self.args.admin_port}")
            except RuntimeError:
                self.admin_port = 0
            if self.admin_port == 0:
                raise WorkerStartError(f"cannot listen on 127.0.0.1:{self.args.admin_port} (the admin port)")
            await admin.start()
            self._servers.append(admin)
            log.info("model control (inferd.v1.ModelService) for every worker on 127.0.0.1:%d", self.admin_port)
        if not self.args.no_metrics:
            self._start_metrics()

    def _start_metrics(self) -> None:
        from server.workers.metrics_view import start_metrics

        try:
            self._metrics, port = start_metrics(self)
        except OSError as exc:
            raise WorkerStartError(
                f"cannot serve metrics on {self.args.metrics_host}:{self.args.metrics_port}: {exc.strerror}"
            ) from None
        if self.args.metrics_port_file:
            write_atomically(self.args.metrics_port_file, str(port))

    def _write_state(self) -> None:
        """``--workers-state-file``: the supervisor's pid and port, each worker's pid, control socket and state."""
        path: Path | None = self.args.workers_state_file
        if path is None:
            return
        workers = [
            {
                "index": s.index,
                "pid": s.process.pid if s.process is not None else None,
                "control": s.socket_path,
                "state": s.state,
                "restarts": s.restarts,
                "metrics_port_file": s.metrics_port_file,
            }
            for s in self.slots
        ]
        state = {"pid": os.getpid(), "port": self.port, "admin_port": self.admin_port, "workers": workers}
        write_atomically(path, json.dumps(state, indent=1))
