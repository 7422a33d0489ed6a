"""Fix assembly: the sentences of one epoch (reporting cycle) combined into one ``Fix``.

A receiver sends, once per epoch, a burst of sentences (GGA, RMC, GSA, GSV, VTG, GLL, GNS, ZDA
... in an order of its own). ``FixAssembler.push(sentence)`` merges their fields and returns
the fixes that become complete. It follows what gpsd does, learned from gpsd's own output for
twenty receivers (``tests/fixtures/gpsd-nmea``):

- **Cycles are marked by time.** A sentence carrying a UTC time of day (GGA, GNS, ZDA, GBS, and
  RMC or GLL only when they say the data are valid) that differs from the previous one starts
  a new cycle: the merged fields are cleared.
- **The cycle end is learned.** The last time-carrying sentence type seen before a time change
  is remembered as a cycle ender; once one is known, the state is reported when an ender
  arrives. Until then, every sentence that sets a position or a fix mode reports.
- **A report is a fix only when the receiver says it is valid**: the merged mode is 2D or 3D
  (GGA quality above 0 with satellites, RMC/GLL status A, a GNS mode whose first character is
  not N, GSA fix type 2 or 3, and a later invalid sentence of the same cycle withdraws it), a
  position came in this cycle, and the date is known (from RMC or ZDA; GGA alone has no date).
  Where gpsd and the standard disagree, the stricter reading wins: a fix gpsd would not report
  is worse than one missed.
- **Dates**: the date is carried forward across midnight when the hour goes backwards, and a
  date a multiple of 1024 weeks before the reference date (GPS week rollover) is moved
  forward (``correct_week_rollover``).

One fix per cycle is returned: as soon as the sentence type that closed the previous cycle
reports (the epoch is then complete), else when the next cycle starts or on ``flush()``. Its
fields are those of the cycle's last valid report, so time and position are exactly what gpsd
reports for that epoch. A receiver whose cycle has learned several enders is reported by gpsd
at each of them, and when one of them carries a stale position (a GGA a second behind its RMC
and GLL) the reports differ: observed against gpsd 3.22 (``tests/test_gpsd_oracle.py``), the
agent then waits for the cycle's end and reports gpsd's last report of the epoch, its final
word (one epoch later than a single-ender receiver's fix). Dilutions and the GSA satellite
count that a receiver sends after the cycle's last timed sentence are taken from the previous
cycle (they change slowly).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from edge_agent.gnss.fix import Fix
from edge_agent.gnss.nmea import Sentence
from edge_agent.gnss.sentences import decode

__all__ = [
    "BUILD_DATE",
    "ROLLOVER",
    "AssemblerStats",
    "FixAssembler",
    "correct_week_rollover",
    "default_reference",
]

# GPS week numbers in the legacy navigation message wrap every 1024 weeks (19.6 years).
ROLLOVER = timedelta(weeks=1024)
# No receiver connected to this code can be living before the code was written.
BUILD_DATE = datetime(2026, 11, 21, tzinfo=UTC)
_KNOTS_TO_MPS = 1852.0 / 3600.0
_KMH_TO_MPS = 1.0 / 3.6
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# FAA mode indicator (NMEA 2.3+) to GGA quality: autonomous, differential, precise, RTK fixed,
# RTK float, estimated (dead reckoning), manual, simulator.
_CARRIED = ("pdop", "hdop", "gsa_used")
_FAA_QUALITY = {"A": 1, "D": 2, "P": 3, "R": 4, "F": 5, "E": 6, "M": 7, "S": 8}


def _mode_from(r: dict[str, Any]) -> int:
    # A height needs a fourth satellite: with fewer used, the altitude is a held value.
    sats = r["sats"]
    return 3 if r["alt"] is not None and (sats is None or sats >= 4) else 2


def default_reference() -> datetime:
    """The reference for rollover correction: now, or the build date if the clock is behind."""
    return max(datetime.now(UTC), BUILD_DATE)


def correct_week_rollover(when: datetime, reference: datetime) -> datetime:
    """Move ``when`` forward by whole 1024-week periods while it stays before ``reference``.

    A receiver that lost track of the GPS week era reports a date 1024 (or 2048) weeks in the
    past; the true date is the latest ``when + k * 1024 weeks`` not after ``reference`` (plus a
    day of slack for a reference taken from a clock slightly behind).
    """
    limit = reference + timedelta(days=1)
    if when + ROLLOVER > limit:
        return when
    k = (limit - when) // ROLLOVER
    return when + k * ROLLOVER


@dataclass(slots=True)
class AssemblerStats:
    """Counters of fix assembly."""

    cycles: int = 0
    fixes: int = 0
    no_fix_cycles: int = 0
    no_date: int = 0
    rollover_corrected: int = 0
    ignored: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class _Contribution:
    """What one sentence adds to the cycle."""

    tod: int | None = None  # time of day (µs) this sentence marks the cycle with
    values: dict[str, Any] | None = None
    moves: bool = False  # sets a position or a fix mode (reports before the cycle is learned)


class FixAssembler:
    """Combines the sentences of each epoch into at most one ``Fix`` (see the module doc).

    ``reference`` is the date the rollover correction measures against; by default the later
    of now and the build date, taken when the assembler is created.
    """

    def __init__(self, *, reference: datetime | None = None) -> None:
        self._reference = reference if reference is not None else default_reference()
        self._date: date | None = None
        self._hour: int | None = None
        self._tod: int | None = None
        self._lasttag: str | None = None
        self._enders: set[str] = set()
        self._closer: str | None = None  # the tag that closed the previous cycle
        self._cycle: dict[str, Any] = {}
        self._candidate: dict[str, Any] | None = None
        self._carry: dict[str, Any] = {}
        self._emitted = False
        self._last_time: datetime | None = None
        self.stats = AssemblerStats()
        self._handlers = {
            "GGA": self._gga,
            "GNS": self._gns,
            "RMC": self._rmc,
            "GLL": self._gll,
            "VTG": self._vtg,
            "GSA": self._gsa,
            "ZDA": self._zda,
            # GBS marks the cycle like a fix sentence in gpsd's output (gr8013-w). GST and GRS
            # are not counted: marking more sentences than gpsd would shift the learned cycle
            # end and could report an epoch gpsd does not; marking fewer can only miss one.
            "GBS": self._time_only,
        }

    @property
    def cycle_learned(self) -> bool:
        """Whether the receiver's cycle ender is known (reports are then once per cycle)."""
        return bool(self._enders)

    def push(self, sentence: Sentence) -> list[Fix]:
        """Merge one sentence; return the fixes it completes (zero, one, rarely two)."""
        handler = self._handlers.get(sentence.kind)
        rec = decode(sentence) if handler is not None else None
        if handler is None or rec is None:
            self.stats.ignored += 1
            return []
        c = handler(rec)
        out: list[Fix] = []
        tag = sentence.kind
        if c.tod is not None:
            if c.tod != self._tod:
                fix = self._close_cycle()
                if fix is not None:
                    out.append(fix)
                if self._lasttag is not None:
                    self._enders.add(self._lasttag)
                self._closer = self._lasttag
                self._tod = c.tod
            self._lasttag = tag
        if c.values:
            self._cycle.update(c.values)
        if tag in self._enders or (not self._enders and c.moves):
            self._report()
            # With several enders gpsd reports the epoch again at each of them, the last
            # report being its final word: the fix waits for the cycle's end then.
            if tag == self._closer and len(self._enders) == 1:
                fix = self._emit()
                if fix is not None:
                    out.append(fix)
        return out

    def flush(self) -> list[Fix]:
        """Emit the current cycle's fix, if any (end of input, or the receiver went quiet)."""
        fix = self._emit()
        return [] if fix is None else [fix]

    # -- cycle state ---------------------------------------------------------------------

    def _close_cycle(self) -> Fix | None:
        fix = self._emit()
        self._carry = {k: self._cycle[k] for k in _CARRIED if k in self._cycle}
        if self._tod is not None:
            self.stats.cycles += 1
            if self._candidate is None and not self._emitted:
                self.stats.no_fix_cycles += 1
        self._cycle = {}
        self._candidate = None
        self._emitted = False
        return fix

    def _report(self) -> None:
        cy = self._cycle
        if cy.get("mode", 0) < 2 or "lat" not in cy:
            return
        if "time" not in cy:
            self.stats.no_date += 1
            return
        self._candidate = dict(cy)

    def _emit(self) -> Fix | None:
        cand = self._candidate
        if cand is None or self._emitted:
            return None
        self._emitted = True
        fix = self._make_fix(cand)
        if fix is None:
            return None
        self.stats.fixes += 1
        return fix

    def _make_fix(self, c: dict[str, Any]) -> Fix | None:
        day, tod = c["time"]
        when = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(microseconds=tod)
        corrected = correct_week_rollover(when, self._reference)
        if corrected != when:
            self.stats.rollover_corrected += 1
        if corrected == self._last_time:
            return None  # the same epoch again (a receiver repeating its last cycle)
        self._last_time = corrected
        c = {**self._carry, **c}
        speed = c.get("speed")
        track = c.get("track")
        sats = c.get("sats")
        if sats is None:
            sats = c.get("gsa_used") or None
        quality = c.get("quality")
        if quality is None:
            quality = _FAA_QUALITY.get(c.get("faa") or "")
        return Fix(
            time=corrected,
            lat=c["lat"],
            lon=c["lon"],
            alt_m=c.get("alt"),
            speed_mps=speed if speed is not None and speed >= 0.0 else None,
            track_deg=track % 360.0 if track is not None and 0.0 <= track <= 360.0 else None,
            mode=3 if c["mode"] >= 3 else 2,
            quality=quality,
            hdop=c.get("hdop"),
            pdop=c.get("pdop"),
            sats=sats,
        )

    # -- time ----------------------------------------------------------------------------

    def _merge_tod(self, tod: int) -> None:
        hour = tod // 3_600_000_000
        if self._hour is not None and hour < self._hour and self._date is not None:
            self._date += timedelta(days=1)  # midnight passed since the last date
        self._hour = hour

    def _full_time(self, tod: int) -> tuple[date, int] | None:
        # The datetime itself is built only for the fixes reported (most sentences are not).
        return None if self._date is None else (self._date, tod)

    def _set_date(self, ymd: tuple[int, int, int]) -> None:
        self._date = date(*ymd)

    # -- sentences -----------------------------------------------------------------------

    def _position_values(self, r: dict[str, Any], mode: int) -> dict[str, Any]:
        v: dict[str, Any] = {"mode": mode}
        if r["lat"] is not None and r["lon"] is not None:
            v["lat"] = r["lat"]
            v["lon"] = r["lon"]
        else:
            v["mode"] = 1
        return v

    def _gga(self, r: dict[str, Any]) -> _Contribution:
        tod = r["time"]
        quality = r["quality"]
        v: dict[str, Any]
        # Quality 0 is no fix; a fix "from zero satellites" is no fix either (Furuno GT-88).
        if not quality or r["sats"] == 0:
            v = {"mode": 1}
        else:
            v = self._position_values(r, _mode_from(r))
            v["quality"] = quality
            v.update({k: r[k] for k in ("sats", "hdop", "alt") if r[k] is not None})
        return self._timed(tod, v)

    def _timed(self, tod: int | None, v: dict[str, Any]) -> _Contribution:
        """A moving contribution: the time of day merged into the epoch, and the full time
        added to the values when the date is known."""
        if tod is not None:
            self._merge_tod(tod)
            t = self._full_time(tod)
            if t is not None:
                v["time"] = t
        return _Contribution(tod, v, moves=True)

    def _gns(self, r: dict[str, Any]) -> _Contribution:
        tod = r["time"]
        modes = (r["modes"] or "N").upper()
        v: dict[str, Any]
        # Validity from the first (GPS) character, as gpsd reads it (Furuno GT-88 "NDD" is no
        # fix in its output); the other constellations only raise the quality.
        if modes[0] == "N" or r["sats"] == 0:
            v = {"mode": 1}
        else:
            v = self._position_values(r, _mode_from(r))
            q = max((_FAA_QUALITY.get(ch, 0) for ch in modes), default=0)
            if q:
                v["quality"] = q
            v.update({k: r[k] for k in ("sats", "hdop", "alt") if r[k] is not None})
        return self._timed(tod, v)

    def _rmc(self, r: dict[str, Any]) -> _Contribution:
        # Time and date count only when the receiver says the data are valid: some chips
        # send stale or made-up times with status V (MTK3301, RGM-3800).
        if r["status"] not in ("A", "D") or r["faa"] == "N":
            return _Contribution(None, {"mode": 1}, moves=True)
        v = self._position_values(r, max(2, self._cycle.get("mode", 0)))
        if r["faa"] is not None:
            v["faa"] = r["faa"]
        speed = r["speed_kn"]
        if speed is not None:
            v["speed"] = speed * _KNOTS_TO_MPS
        if r["track"] is not None:
            v["track"] = r["track"]
        tod = r["time"]
        if tod is None or r["date"] is None:
            return _Contribution(None, v, moves=True)
        self._merge_tod(tod)
        self._set_date(r["date"])
        v["time"] = self._full_time(tod)
        return _Contribution(tod, v, moves=True)

    def _gll(self, r: dict[str, Any]) -> _Contribution:
        if r["status"] != "A" or r["faa"] == "N":
            return _Contribution(None, {"mode": 1}, moves=True)
        v = self._position_values(r, max(2, self._cycle.get("mode", 0)))
        if r["faa"] is not None:
            v["faa"] = r["faa"]
        tod = r["time"]
        return self._timed(tod, v)

    def _vtg(self, r: dict[str, Any]) -> _Contribution:
        if r.get("faa") == "N":
            return _Contribution()
        v: dict[str, Any] = {}
        if r["speed_kn"] is not None:
            v["speed"] = r["speed_kn"] * _KNOTS_TO_MPS
        elif r["speed_kmh"] is not None:
            v["speed"] = r["speed_kmh"] * _KMH_TO_MPS
        if r["track"] is not None:
            v["track"] = r["track"]
        return _Contribution(None, v)

    def _gsa(self, r: dict[str, Any]) -> _Contribution:
        mode = r["fix_mode"]
        if mode not in (1, 2, 3):
            return _Contribution()
        v: dict[str, Any] = {"mode": mode}
        if r["pdop"] is not None:
            v["pdop"] = r["pdop"]
        if r["hdop"] is not None:
            v["hdop"] = r["hdop"]
        # One GSA per constellation in multi-GNSS receivers: the satellites used add up.
        v["gsa_used"] = self._cycle.get("gsa_used", 0) + r["used"]
        return _Contribution(None, v, moves=True)

    def _zda(self, r: dict[str, Any]) -> _Contribution:
        tod = r["time"]
        if tod is None:
            return _Contribution()
        self._merge_tod(tod)
        v: dict[str, Any] = {}
        if r["date"] is not None:
            self._set_date(r["date"])
        t = self._full_time(tod)
        if t is not None:
            v["time"] = t
        return _Contribution(tod, v)

    def _time_only(self, r: dict[str, Any]) -> _Contribution:
        return _Contribution(r["time"])
