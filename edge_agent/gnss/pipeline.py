"""The GNSS pipeline, sans-IO: parser → fix assembly → filters → adaptive reporting.

One ``GnssPipeline`` is what the live service (``service``) and every replay (``replay``, and the
trips replay through it) run, so a replay is the same code as the agent. It takes NMEA bytes
(``feed``), gpsd reports (``push_report``) or fixes assembled elsewhere (``push_fix``), and
returns one ``Outcome`` per assembled fix: the fix, the filter's drop reason or None when kept,
and the reporter's ping reason or None when the kept fix is not a ``gnss.fix`` ping. It does no
I/O and reads no clock of its own: ``clock()`` says what time the age filters judge a fix
against, or None when no clock can be trusted for that.

Live, ``clock`` is the system time when the kernel says NTP synchronised it, else None (a Pi
after a boot without network must not judge fixes by a wrong clock). A replay has no wall clock
at all: a recorded log is judged by its own time only, with ``REPLAY_FILTER`` (see there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_agent.gnss.assembler import FixAssembler
from edge_agent.gnss.config import FilterConfig, ReportConfig
from edge_agent.gnss.filters import AdaptiveReporter, FixFilter
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.gpsd_json import fix_from_tpv
from edge_agent.gnss.nmea import DEFAULT_MAX_LENGTH, NmeaStreamParser

__all__ = ["REPLAY_FILTER", "GnssPipeline", "Outcome", "no_wall_clock"]

REPLAY_FILTER = FilterConfig(jump_reset_after=1)
"""The filters of a replay: the agent's, judged by the log's own time.

No wall clock (``too_old``/``in_future`` need one), and a fix that contradicts the one before it
becomes the reference at once (``jump_reset_after`` 1), as gpsd reports it: recorded logs are
often two sessions run together (gpsd's bt451.log: 3 s parked, then a drive timed 50 minutes
earlier, led by one fix a day ahead), where the live agent, with a synchronised clock, would drop
the one fix out of its time. Invalid fixes, (0, 0), bad HDOP and repeated epochs are dropped as
the agent drops them. On the 20-log gpsd corpus this keeps every fix gpsd reports."""


def no_wall_clock() -> datetime | None:
    """The clock of a replay: none (the age filters are skipped)."""
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the pipeline made of one fix: ``dropped`` (a filter reason) or kept, and
    ``report`` (a ping reason) when the kept fix becomes a ``gnss.fix`` event."""

    fix: Fix
    dropped: str | None = None
    report: str | None = None

    @property
    def kept(self) -> bool:
        """Whether the filters kept the fix."""
        return self.dropped is None


class GnssPipeline:
    """NMEA bytes, gpsd reports or fixes in; ``Outcome`` per fix out (module docstring)."""

    def __init__(
        self,
        filter: FilterConfig | None = None,
        report: ReportConfig | None = None,
        *,
        clock: Callable[[], datetime | None] = no_wall_clock,
        max_sentence: int = DEFAULT_MAX_LENGTH,
        require_checksum: bool = False,
        comments: bool = False,
        reference: datetime | None = None,
        parser: NmeaStreamParser | None = None,
        assembler: FixAssembler | None = None,
    ) -> None:
        self.parser = parser or NmeaStreamParser(
            max_length=max_sentence, require_checksum=require_checksum, comments=comments
        )
        self._reference = reference
        self.assembler = assembler or FixAssembler(reference=reference)
        self.filter = FixFilter(filter if filter is not None else FilterConfig())
        self.reporter = AdaptiveReporter(report if report is not None else ReportConfig())
        self.clock = clock
        self._last_report_time: datetime | None = None

    def feed(self, data: bytes) -> list[Outcome]:
        """NMEA bytes in any chunking; the outcomes of the fixes they complete."""
        out: list[Outcome] = []
        for sentence in self.parser.feed(data):
            for fix in self.assembler.push(sentence):
                out.append(self.push_fix(fix))
        return out

    def flush(self) -> list[Outcome]:
        """The line went quiet: the epoch in progress is complete as far as anyone will know."""
        return [self.push_fix(fix) for fix in self.assembler.flush()]

    def end(self) -> list[Outcome]:
        """End of the stream: a log may end without a terminator after its last sentence."""
        return [*self.feed(b"\n"), *self.flush()]

    def restart(self) -> None:
        """A new connection to the device: drop the partial sentence and epoch, keep the filter
        and reporter state (the van did not move back in time)."""
        self.parser.reset()  # its counters go on: health counts them as deltas
        self.assembler = FixAssembler(reference=self._reference)
        self._last_report_time = None

    def push_report(self, report: dict[str, Any]) -> Outcome | None:
        """One of gpsd's JSON reports; None unless it is a fix of a new epoch (gpsd may report
        one epoch more than once: the first counts, the repeats are not the receiver's)."""
        fix = fix_from_tpv(report)
        if fix is None or fix.time == self._last_report_time:
            return None
        self._last_report_time = fix.time
        return self.push_fix(fix)

    def push_fix(self, fix: Fix) -> Outcome:
        """Filter one assembled fix and decide whether it is reported."""
        reason = self.filter.check(fix, self.clock())
        if reason is not None:
            return Outcome(fix, dropped=reason)
        return Outcome(fix, report=self.reporter.step(fix))
