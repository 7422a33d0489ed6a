"""The agent's runtime: opens the outbox, serves the local API, runs the uplink and the
configured components (GNSS, scanning, trips, the station's docks) as named tasks of one
``asyncio.TaskGroup``.

SIGTERM and SIGINT stop it cleanly: tasks are cancelled, the uplink announces ``offline``, queued
events are committed and the outbox is closed. A crash (SIGKILL, power cut) loses nothing that was
accepted: the outbox is the truth and everything unacked is resent at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_agent import __version__
from edge_agent.api import build_app
from edge_agent.clock import Clock
from edge_agent.config import AgentConfig, load_agent_config, parse_listen
from edge_agent.gnss.service import GnssService
from edge_agent.outbox import Draft, Outbox, OutboxError
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.lifecycle import add_progress_probe, announce_ready, run_until_signalled
from edge_agent.platform.linkwatch import LinkWatch
from edge_agent.platform.yamlconf import ConfigError
from edge_agent.recorder import OutboxSink
from edge_agent.remote_config import (
    RESTART_AFTER_ACK_S,
    ConfigTrial,
    apply_config,
    config_digest,
    reexec,
    report_rollback,
)
from edge_agent.uplink import Uplink
from edge_agent.wire.commands import CommandRefused
from edge_agent.wire.envelope import EnvelopeError
from edge_agent.wire.limits import batch_body_limit

if TYPE_CHECKING:
    from edge_agent.station.service import StationService
    from edge_agent.trips.hub_eta import HubEtas
    from edge_agent.trips.service import TripService

__all__ = ["Agent", "run_agent_from_file"]

ComponentRunner = Callable[[], Awaitable[None]]

log = logging.getLogger(__name__)


class Agent:
    """One edge agent; ``await Agent(config).run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        config_path: Path | None = None,
        trial: ConfigTrial | None = None,
    ) -> None:
        self.config = config
        self.health = HealthRegistry()
        self.clock = Clock(config.clock.policy)
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.api_port: int | None = None
        self.gnss: GnssService | None = None
        self.trips: TripService | None = None
        self.station: StationService | None = None
        self.hub_etas: HubEtas | None = None
        """The hub's latest ETAs per route (``cmd/eta``), shown by ``GET /v1/trip``."""
        self._command_handlers: dict[str, Callable[[bytes], Awaitable[None]]] = {}
        self._sink: OutboxSink | None = None
        self._report_task: asyncio.Task[None] | None = None
        self.config_path = config_path
        """The device file: with it, ``cmd/config`` can replace it (on trial, rolled back by
        itself when the hub cannot be reached with the new one: ``edge_agent.remote_config``)."""
        self.trial = trial
        self.restart_requested = False
        self._stop: asyncio.Event | None = None
        if config_path is not None:
            self._command_handlers["config"] = self._on_config

    def _on_outbox_alarm(self, name: str, detail: dict[str, Any]) -> None:
        self.health.set_state("outbox", name, **detail)

    def request_restart(self) -> None:
        """Stop cleanly; ``run_agent_from_file`` then starts the program again in place."""
        self.restart_requested = True
        if self._stop is not None:
            self._stop.set()

    async def _on_config(self, payload: bytes) -> None:
        """``cmd/config``: checked and applied on trial (``remote_config``); the agent restarts
        on the new file once the ack is out (a lost ack only makes the hub send it again, and a
        command already on trial is acknowledged without a change)."""
        assert self.config_path is not None
        if await apply_config(self.config_path, payload, self.config):
            asyncio.get_running_loop().call_later(RESTART_AFTER_ACK_S, self.request_restart)

    async def _on_report(self, payload: bytes) -> None:
        """``cmd/report``: the doctor's checks run in the background (they take seconds, and
        the command loop must go on taking acks); the report is sent as a ``device.report``
        event. The command is acknowledged once the report is under way."""
        if self._report_task is not None and not self._report_task.done():
            return  # one report at a time: a repeat of the command joins the running one
        self._report_task = asyncio.create_task(self._send_report(), name="report")

    async def _send_report(self) -> None:
        from edge_agent.doctor import report

        try:
            data = await report(self.config, health=self.health)
            assert self._sink is not None
            await self._sink.emit("device.report", data)
        except (OutboxError, EnvelopeError) as exc:
            self.health.count("commands", f"report-not-recorded:{type(exc).__name__}")
        except Exception:  # a check's bug must not take the agent down
            log.exception("cmd/report failed")
            self.health.count("commands", "report-failed")

    async def _on_eta(self, payload: bytes) -> None:
        """``cmd/eta``: the hub's ETAs for a route, kept in memory for the driver app (the van
        shows the hub's ETA, it does not compute its own); a payload that is not one is refused
        with the field that is wrong."""
        from edge_agent.trips.hub_eta import EtaError, parse_eta

        assert self.hub_etas is not None
        try:
            eta = parse_eta(payload)
        except EtaError as exc:
            self.health.count("commands", "eta-invalid")
            raise CommandRefused(str(exc)) from None
        if not self.hub_etas.put(eta):
            self.health.count("commands", "eta-older")

    def trip_view(self) -> dict[str, Any]:
        """``GET /v1/trip``: the route, the van's current or next stop and the hub's ETAs."""
        trips = self.trips
        if trips is None or self.hub_etas is None:
            return {"route": None, "stop": None, "stops": [], "eta_at": None}
        from edge_agent.trips.hub_eta import trip_view

        return trip_view(trips.manifest, trips.engine, trips.state, self.hub_etas)

    def _on_accepted(self, drafts: list[Draft]) -> None:
        """Events posted to the local API, committed: a station reads the handhelds' scans."""
        if self.station is not None:
            self.station.on_posted(drafts)

    async def _on_command(self, name: str, payload: bytes) -> None:
        handler = self._command_handlers.get(name)
        if handler is None:
            self.health.count("commands", f"unhandled:{name[:64]}")
            raise CommandRefused(f"unknown command {name[:64]!r} for a {self.config.device.role}")
        await handler(payload)

    async def run(self, stop: asyncio.Event, ready: Callable[[Agent], None] | None = None) -> None:
        """Run every part of the agent until ``stop`` is set."""
        self._stop = stop
        cfg = self.config
        outbox = await Outbox.open(
            cfg.outbox.path,
            cfg.device.fleet,
            cfg.device.id,
            max_bytes=cfg.outbox.max_bytes,
            reserve_bytes=cfg.outbox.effective_reserve,
            id_retention_s=cfg.outbox.id_retention,
            # an accepted event must fit alone in one batch of the configured size
            max_event_bytes=batch_body_limit(cfg.uplink.batch_max_bytes),
            disk_reserve_bytes=cfg.outbox.disk_reserve,
        )
        try:
            await self._serve(outbox, stop, ready)
        finally:
            # also when the start fails half-way: an open outbox's thread would keep the
            # process alive after the error, neither serving nor exiting for systemd to restart
            await outbox.close()

    async def _serve(
        self, outbox: Outbox, stop: asyncio.Event, ready: Callable[[Agent], None] | None
    ) -> None:
        """Everything after the outbox is open, until ``stop`` is set."""
        cfg = self.config
        self.outbox = outbox
        outbox.clock_now = self.clock.now
        outbox.on_alarm = self._on_outbox_alarm
        if outbox.corrupt_files:
            self.health.set_state("outbox", "outbox-corrupt", moved_to=outbox.corrupt_files[-1])
        else:
            self.health.set_state("outbox", "ok")
        sink = OutboxSink(outbox, self.clock)
        self._sink = sink
        if self.config_path is not None:
            with contextlib.suppress(OutboxError, EnvelopeError, OSError):
                await report_rollback(self.config_path, sink)
        self._command_handlers["report"] = self._on_report
        device = {"fleet": cfg.device.fleet, "device": cfg.device.id, "role": cfg.device.role}
        app = build_app(
            outbox,
            self.clock,
            self.health,
            device=device,
            max_body=cfg.api.max_body,
            max_batch=cfg.api.max_batch,
            on_accepted=self._on_accepted,
            access=cfg.api,
            trip=self.trip_view,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = parse_listen(cfg.api.listen)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        # systemd's watchdog pings only while the writer commits (the event loop proves itself
        # by running the pings): an accepted event stuck before its fsync restarts the agent
        remove_probe = add_progress_probe("outbox writer", lambda: outbox.writer_busy_since)
        try:
            await site.start()
            server = site._server  # aiohttp exposes the bound port only through the server
            sockets = getattr(server, "sockets", None) or []
            self.api_port = sockets[0].getsockname()[1] if sockets else port
            link = LinkWatch()
            if not link.start():
                link.close()
            boot = time.time() - time.monotonic()
            birth = {"boot": round(boot, 3), "sw": __version__, "config": config_digest(cfg)}
            self.uplink = Uplink(
                cfg.broker,
                cfg.uplink,
                outbox,
                self.health,
                fleet=cfg.device.fleet,
                device=cfg.device.id,
                birth=birth,
                on_command=self._on_command,
                link=link,
            )
            log.info(
                "agent %s/%s: api on %s:%s", cfg.device.fleet, cfg.device.id, host, self.api_port
            )
            if ready is not None:
                ready(self)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(_guarded("uplink", self.uplink.run, self.health), name="uplink"),
                    tg.create_task(self._health_loop(sink), name="health"),
                ]
                trial = self.trial
                if trial is not None:

                    async def supervise_trial() -> None:
                        await trial.supervise(
                            sink, outbox, lambda: self.uplink, self.request_restart
                        )

                    tasks.append(
                        tg.create_task(
                            _guarded("config-trial", supervise_trial, self.health),
                            name="config-trial",
                        )
                    )
                tasks.extend(self._start_components(tg, sink))
                await stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            if self._report_task is not None:
                self._report_task.cancel()
            if self.uplink is not None and self.uplink.link is not None:
                self.uplink.link.close()
            await runner.cleanup()
            remove_probe()

    def _start_components(
        self, tg: asyncio.TaskGroup, sink: OutboxSink
    ) -> list[asyncio.Task[None]]:
        """Start the optional components the configuration names (hooks of later issues)."""
        tasks: list[asyncio.Task[None]] = []
        for name, runner in self._component_runners(sink):
            tasks.append(tg.create_task(_guarded(name, runner, self.health), name=name))
        return tasks

    def _component_runners(self, sink: OutboxSink) -> list[tuple[str, ComponentRunner]]:
        """The configured components: GNSS, scanning, trips and the station plug in here."""
        runners: list[tuple[str, ComponentRunner]] = []
        if self.config.gnss is not None:
            # Other components take every kept fix with self.gnss.add_listener/subscribe.
            self.gnss = GnssService(self.config.gnss, sink, self.health, self.clock)
            runners.append(("gnss", self.gnss.run))
        if self.config.scan is not None:
            from edge_agent.scan.service import ScanService  # loads OpenCV: only when used

            scan = ScanService(self.config.scan, sink, self.health, self.clock)
            runners.append(("scan", scan.run))
        if self.config.trips is not None:
            from edge_agent.trips.hub_eta import HubEtas
            from edge_agent.trips.service import TripService  # loads shapely: only when used

            trips = TripService(
                self.config.trips,
                sink,
                self.health,
                self.clock,
                state_dir=self.config.outbox.path.parent,
            )
            self.trips = trips
            self._command_handlers["manifest"] = trips.on_manifest
            self.hub_etas = HubEtas()
            self._command_handlers["eta"] = self._on_eta
            if self.gnss is not None:
                self.gnss.add_listener(trips.submit_fix)
            runners.append(("trips", trips.run))
        if self.config.station is not None:
            from edge_agent.station.service import StationService

            station = StationService(
                self.config.station,
                sink,
                self.health,
                self.clock,
                state_dir=self.config.outbox.path.parent,
            )
            self.station = station
            self._command_handlers["loadplan"] = station.on_loadplan
            runners.append(("station", station.run))
        return runners

    async def _health_loop(self, sink: OutboxSink) -> None:
        interval = self.config.health.interval
        while True:
            await asyncio.sleep(interval)
            try:
                await sink.emit("device.health", await self.health_report())
            except (OutboxError, EnvelopeError) as exc:
                self.health.count("health", f"not-recorded:{type(exc).__name__}")

    async def health_report(self) -> dict[str, Any]:
        """The data of a periodic ``device.health`` event."""
        assert self.outbox is not None
        stats = await self.outbox.stats()
        return {
            "queue": {"depth": stats.depth, "bytes": stats.bytes, "evicted": stats.evicted},
            "clock": {"source": self.clock.now()[1], "gnss_offset_s": self.clock.gnss_offset_s()},
            "components": self.health.snapshot(),
        }


async def _guarded(name: str, run: Callable[[], Awaitable[None]], health: HealthRegistry) -> None:
    """Run a component forever: an unexpected crash is logged and the component restarted."""
    attempt = 0
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("component %s crashed; restarting", name)
            health.set_state(name, "crashed", error=repr(exc))
            attempt += 1
            await asyncio.sleep(min(60.0, 0.5 * 2 ** min(attempt, 7)))


def run_agent_from_file(path: str) -> int:
    """``edge-agent run --config FILE``: exit 2 on an invalid configuration.

    A file on trial (``cmd/config``) that cannot be loaded or started with is rolled back and
    the program started again on the previous one.
    """
    trial = ConfigTrial.start(Path(path))  # first: a trial past its deadline is undone here
    try:
        config = load_agent_config(path)
    except ConfigError as exc:
        if trial is not None and trial.roll_back(f"the file is invalid: {exc}"):
            reexec()
        print(exc, file=sys.stderr)
        return 2
    agent = Agent(config, config_path=Path(path), trial=trial)

    async def main(stop: asyncio.Event) -> None:
        await agent.run(stop, ready=lambda a: announce_ready(a.api_port))
        if agent.restart_requested:
            reexec()  # before run_until_signalled says STOPPING=1: one service to systemd

    try:
        run_until_signalled(main, config.log.level)
    except (OutboxError, OSError) as exc:  # OSError: the API's port taken, for one
        if trial is not None and trial.roll_back(f"the agent could not start: {exc}"):
            reexec()
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    return 0
