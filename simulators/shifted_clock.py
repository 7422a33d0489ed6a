"""Run a module with its wall clock set back: ``python -m simulators.shifted_clock SECONDS MODULE
ARGS...``.

The demo plays each van's day at 100x in the past, ending about now, while the depot's station
loads the vans in real time: without help, the station's events would be stamped after the
whole day and a parcel left behind at gate-out would come after its van's return in event time.
The demo runs the station agent through this wrapper so that its events carry the morning's
time, before the vans leave. It stands in for what cannot run here: a loading that really took
place before a day that really took an hour.

Only Python's ``time.time`` and ``time.time_ns`` move (the agent's ``Clock`` reads ``time.time``);
they are replaced before the module is imported. Monotonic clocks, ``datetime.now`` and the TLS
library's certificate checks keep the real time.
"""

from __future__ import annotations

import runpy
import sys
import time

__all__ = ["main"]


def main(argv: list[str]) -> None:
    """Shift the wall clock back by ``argv[0]`` seconds and run module ``argv[1]``."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m simulators.shifted_clock SECONDS MODULE [ARGS...]")
    try:
        back = float(argv[0])
    except ValueError:
        raise SystemExit(f"shifted_clock: SECONDS must be a number, not {argv[0]!r}") from None
    real, real_ns = time.time, time.time_ns
    back_ns = round(back * 1e9)
    time.time = lambda: real() - back
    time.time_ns = lambda: real_ns() - back_ns
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
