"""How the agent and the hub live as processes: logging, SIGTERM/SIGINT, a ready line, exits.

Shared by ``edge-agent`` and ``hub-bridge`` so both behave the same under systemd and in tests.
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
from collections.abc import Awaitable, Callable, Sequence

from edge_agent.platform.redact import install_log_redaction

__all__ = ["announce_ready", "cli_main", "run_until_signalled"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def announce_ready(api_port: int | None) -> None:
    """Print the one line on stdout that says the service is ready (tests and the demo wait on
    it): ``{"ready": true, "api_port": N}``."""
    print(json.dumps({"ready": True, "api_port": api_port}), flush=True)


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
    """
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    install_log_redaction()
    log = logging.getLogger(__name__)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                log.error("second stop signal: exiting now")
                logging.shutdown()
                os._exit(1)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGUSR1, log_tasks)
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
