"""How the agent and the hub live as processes: logging, SIGTERM/SIGINT, a ready line, exits,
and what systemd is told (``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``).

Shared by ``edge-agent`` and ``hub-bridge`` so both behave the same under systemd and in tests.

The watchdog pings only while the process makes progress: the event loop proves itself by
running the ping task at all (a loop blocked in a call never gets to it), and every registered
progress probe (``add_progress_probe``: the outbox writer) must not have been busy with one piece
of work for longer than the watchdog interval. When a probe says it is stuck, the pings stop and
systemd kills and restarts the service after ``WatchdogSec``: a hung agent is restarted, an idle
one is not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from edge_agent.platform.redact import install_log_redaction
from edge_agent.platform.systemd import (
    JOURNAL_PRIORITY,
    Notifier,
    stderr_is_journal,
    watchdog_interval,
)

__all__ = [
    "JournalFormatter",
    "ProgressProbe",
    "Watchdog",
    "add_progress_probe",
    "announce_ready",
    "cli_main",
    "run_until_signalled",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""Under journald: no time (the journal stamps every line), the level as a ``<N>`` prefix too."""

ProgressProbe = Callable[[], float | None]
"""Since when (``time.monotonic()``) a component has been busy with work it has not finished;
None while it waits for work (waiting is not being stuck)."""

_PROBES: dict[str, ProgressProbe] = {}


def add_progress_probe(name: str, probe: ProgressProbe) -> Callable[[], None]:
    """Make the watchdog's pings depend on ``probe`` too; returns the function that removes it.

    One registry per process, as there is one watchdog per process (systemd's environment).
    """
    _PROBES[name] = probe

    def remove() -> None:
        if _PROBES.get(name) is probe:
            del _PROBES[name]

    return remove


def announce_ready(api_port: int | None) -> None:
    """Say the service is ready: ``READY=1`` to systemd (when it asks, ``Type=notify``) and one
    line on stdout (tests and the demo wait on it): ``{"ready": true, "api_port": N}``."""
    Notifier.from_env().ready(f"ready; api on port {api_port}")
    print(json.dumps({"ready": True, "api_port": api_port}), flush=True)


class JournalFormatter(logging.Formatter):
    """Log lines for journald's stream: no time stamp, and every line of a record (a traceback
    too) prefixed ``<N>`` with its syslog priority, so ``journalctl -p err`` finds it whole."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record as journald reads it (``SyslogLevelPrefix=`` is on by default)."""
        text = super().format(record)
        prio = 7  # a custom level counts as the nearest standard one below it
        for level, level_prio in sorted(JOURNAL_PRIORITY.items()):
            if record.levelno >= level:
                prio = level_prio
        return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))


class Watchdog:
    """Pings systemd's watchdog at half its interval while every progress probe is healthy.

    ``tick()`` is one decision (tests drive it with their own ``now``); ``run()`` ticks forever.
    A probe busy for longer than ``limit_s`` (the watchdog interval by default), or one that
    raises, withholds the pings; the first withheld ping is logged and put in ``STATUS=``, and
    so is the recovery.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float,
        *,
        probes: Mapping[str, ProgressProbe] | None = None,
        limit_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.limit_s = interval_s if limit_s is None else limit_s
        self.probes: Mapping[str, ProgressProbe] = _PROBES if probes is None else probes
        self.clock = clock
        self.withholding = False
        self.pings = 0

    def stalled(self, now: float | None = None) -> list[tuple[str, float]]:
        """The probes stuck at ``now``, with for how long (``inf`` for a probe that raised)."""
        at = self.clock() if now is None else now
        out: list[tuple[str, float]] = []
        for name, probe in list(self.probes.items()):
            try:
                since = probe()
            except Exception:
                logging.getLogger(__name__).exception("progress probe %s failed", name)
                out.append((name, float("inf")))
                continue
            if since is not None and at - since > self.limit_s:
                out.append((name, at - since))
        return out

    def tick(self, now: float | None = None) -> bool:
        """Ping if every probe is healthy; answer whether a ping was sent."""
        log = logging.getLogger(__name__)
        stuck = self.stalled(now)
        if stuck:
            if not self.withholding:
                self.withholding = True
                what = ", ".join(f"{name} busy for {age:.0f}s" for name, age in stuck)
                log.error("watchdog: no progress (%s): withholding pings", what)
                self.notifier.status(f"no progress: {what}")
            return False
        if self.withholding:
            self.withholding = False
            log.warning("watchdog: progress again: pings resumed")
            self.notifier.status("running")
        sent = self.notifier.watchdog()
        self.pings += sent
        return sent

    async def run(self) -> None:
        """Tick every half interval until cancelled."""
        while True:
            self.tick()
            await asyncio.sleep(self.interval_s / 2)


def log_tasks() -> None:
    """Log where every task of the running loop waits (SIGUSR1: what is this service doing?)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"task {task.get_name()}:\n")
        task.print_stack(limit=12, file=out)
    logging.getLogger(__name__).warning("tasks on SIGUSR1:\n%s", out.getvalue())


STOP_GRACE_S = 10.0
"""How long a stop may take before the process is ended anyway (nothing accepted is lost: every
accepted event is already committed with fsync)."""


def run_until_signalled(
    main: Callable[[asyncio.Event], Awaitable[None]],
    log_level: str,
    *,
    grace_s: float = STOP_GRACE_S,
) -> None:
    """Configure logging and run ``main(stop)``; SIGTERM or SIGINT sets ``stop``.

    A stop is bounded: if ``main`` has not returned ``grace_s`` after the signal (a task that
    waits on a dead connection, say), where every task waits is logged and ``main`` is
    cancelled; if that does not end it within a few seconds either, or on a second signal, the
    process exits at once. A van switched off in a dead zone stops within seconds.

    Under systemd: logs go to journald without time stamps and with their priorities;
    ``STOPPING=1`` is sent on the first signal (or when ``main`` ends by itself); with
    ``WatchdogSec=`` a ``Watchdog`` pings while the loop and the progress probes move.
    """
    if stderr_is_journal():
        handler = logging.StreamHandler()
        handler.setFormatter(JournalFormatter())
        logging.basicConfig(level=log_level, handlers=[handler])
    else:
        logging.basicConfig(level=log_level, format=LOG_FORMAT)
    install_log_redaction()
    log = logging.getLogger(__name__)
    notifier = Notifier.from_env()
    interval = watchdog_interval()

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stopping_said = False

        def say_stopping(why: str) -> None:
            nonlocal stopping_said
            if not stopping_said:
                stopping_said = True
                notifier.stopping(why)

        def on_signal() -> None:
            if stop.is_set():
                log.error("second stop signal: exiting now")
                logging.shutdown()
                os._exit(1)
            say_stopping("stopping on a signal")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGUSR1, log_tasks)
        watchdog: asyncio.Task[None] | None = None
        if notifier.enabled and interval is not None:
            log.info("watchdog: a ping every %.1fs while the service makes progress", interval / 2)
            watchdog = asyncio.create_task(Watchdog(notifier, interval).run(), name="watchdog")
        try:
            work = asyncio.ensure_future(main(stop))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait([work, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not work.done():
                done, _ = await asyncio.wait([work], timeout=grace_s)
                if not done:
                    log.error("stop is taking more than %.0fs: cancelling", grace_s)
                    log_tasks()
                    work.cancel()
                    done, _ = await asyncio.wait([work], timeout=5.0)
                    if not done:
                        log.error("the service did not stop: exiting now")
                        logging.shutdown()
                        os._exit(1)
            await work
        finally:
            say_stopping("stopped")
            if watchdog is not None:
                watchdog.cancel()

    asyncio.run(runner())


def cli_main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand's ``func``; its result is the exit code."""
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: not an error of ours
        # point stdout at /dev/null so the flush at exit does not raise again (Python docs' recipe)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
