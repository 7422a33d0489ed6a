"""Where event times come from, and how far the system clock can be trusted.

A Raspberry Pi has no RTC: after a boot without network its clock is wrong until NTP or GNSS fixes
it (FIELD-NOTES 2). ``Clock.now()`` answers the time to stamp on an event and the contract's
``clock`` value saying where it came from:

- ``ntp``: the kernel says the system clock is synchronised (adjtimex, STA_UNSYNC clear);
- ``gnss``: the system clock is not synchronised but a recent GNSS fix gave the time;
- ``rtc``: not synchronised, no GNSS, but the board has a battery-backed RTC;
- ``unsynced``: none of those.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "GnssReference", "kernel_clock_synced"]

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> on Linux (the field widths are the platform's long/int).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def kernel_clock_synced() -> bool | None:
    """Whether the kernel considers the system clock NTP-synchronised; None if it cannot say."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()  # modes=0: read only, needs no privilege
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


@dataclass(frozen=True, slots=True)
class GnssReference:
    """GNSS time observed at a monotonic instant: enough to carry GNSS time forward."""

    gnss_time: datetime
    monotonic: float


class Clock:
    """Stamps events with the best time available and says where it came from.

    ``policy`` forces a source (``"system"`` trusts the system clock as ``ntp``), ``"auto"`` asks
    the kernel. A GNSS reference older than ``gnss_max_age_s`` is not used.
    """

    def __init__(
        self,
        policy: str = "auto",
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        synced: Callable[[], bool | None] = kernel_clock_synced,
        has_rtc: bool | None = None,
        gnss_max_age_s: float = 3600.0,
        sync_check_interval_s: float = 60.0,
    ) -> None:
        self._policy = policy
        self._wall = wall
        self._mono = monotonic
        self._synced_probe = synced
        self._has_rtc = os.path.exists("/dev/rtc0") if has_rtc is None else has_rtc
        self._gnss: GnssReference | None = None
        self._gnss_max_age = gnss_max_age_s
        self._check_every = sync_check_interval_s
        self._synced: bool | None = None
        self._checked_at = float("-inf")

    def observe_gnss(self, gnss_time: datetime) -> None:
        """Record the time of a valid GNSS fix just received."""
        self._gnss = GnssReference(gnss_time.astimezone(UTC), self._mono())

    def system_synced(self) -> bool:
        """The kernel's answer, re-asked at most once per ``sync_check_interval_s``."""
        if self._policy == "system":
            return True
        now = self._mono()
        if now - self._checked_at >= self._check_every:
            self._synced = self._synced_probe()
            self._checked_at = now
        return bool(self._synced)

    def gnss_offset_s(self) -> float | None:
        """System time minus GNSS time, in seconds, if a GNSS reference is fresh."""
        gnss_now = self._gnss_now()
        if gnss_now is None:
            return None
        return self._wall() - gnss_now.timestamp()

    def _gnss_now(self) -> datetime | None:
        ref = self._gnss
        if ref is None:
            return None
        age = self._mono() - ref.monotonic
        if age > self._gnss_max_age or age < 0:
            return None
        return ref.gnss_time + timedelta(seconds=age)

    def now(self) -> tuple[datetime, str]:
        """The time to stamp on an event and its ``clock`` source."""
        if self.system_synced():
            return datetime.fromtimestamp(self._wall(), UTC), "ntp"
        gnss_now = self._gnss_now()
        if gnss_now is not None:
            return gnss_now, "gnss"
        source = "rtc" if self._has_rtc else "unsynced"
        return datetime.fromtimestamp(self._wall(), UTC), source
