"""The hysteresis of one zone: ``ZoneTracker.step(track, move) -> (track, transition)``.

What the van did with respect to one zone at one fix, and nothing about what that means (which
events a depot, a stop or an approach zone gives is the engine's business)::

    outside ──(a run inside: enter_fixes fixes, enter_after s, margin_in deep)──▶ inside
    inside  ──(a run outside: exit_fixes fixes, exit_after s, margin_out out)──▶ outside

A *run* starts at the first fix across the boundary and ends (unconfirmed) at the first fix back
on the other side; fixes between the boundary and the margin keep a run going without counting
towards it. A run into the zone that ends unconfirmed, or a single segment between two fixes
outside, that passes ``margin_in`` deep is a crossing (``Crossed``).

A van that drives in and *stops* near the inner edge may never be ``margin_in`` deep, yet it has
arrived. So a run into the zone also confirms by dwelling: once the van is slow (reported speed
at or below the stop speed), its slow fixes vote, inside or outside, and a slow fix outside no
longer ends the run. Over the whole stay, when it drives off after at least ``dwell_after``
seconds, a majority of inside votes (the median of where it stood is inside) confirms the enter,
from the run's crossing; while it still stands, two inside votes for each outside one over
``2 * dwell_after`` seconds confirm it early. A van coming to rest just outside (within
``margin_out``) starts such a run too, from where it came to rest: under correlated noise every
fix of its drive in may have been outside.
The margin still guards the moving van: its fixes do not vote, so a drive past at the edge does
not enter; a van parked just outside is outvoted by its own fixes; and once a rest was seen
outside, only the vote confirms (an hour of a standing receiver's wander can reach margin-deep).

A track exists only while the van is inside the zone or on a run into it; ``step`` returns
None for the track when there is nothing left to remember. The track is changed in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.trips.segment import FixPoint, Mark, Move
from edge_agent.trips.zones import Zone

# A van still standing is judged early, on STANDING_FACTOR * dwell_after of votes and with
# STANDING_MAJORITY inside votes per outside one: noise correlated over tens of seconds can hold a
# van parked 5 m outside "inside" for a minute now and then, so an early verdict asks for its
# position to be clearly, not barely, inside (its arrival keeps the time of its crossing however
# late it is told). When the rest ends (the first fast fix), the whole stay has voted and a plain
# majority decides: the median of where it stood.
STANDING_FACTOR = 2.0
STANDING_MAJORITY = 2.0

__all__ = [
    "ENTERED",
    "STAYS",
    "Crossed",
    "Entered",
    "Hysteresis",
    "Left",
    "Stays",
    "Transition",
    "ZoneTrack",
    "ZoneTracker",
]


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """How long and how many fixes a run must last to confirm an enter or an exit."""

    enter_after: float = 2.0
    enter_fixes: int = 2
    exit_after: float = 10.0
    exit_fixes: int = 3
    dwell_after: float = 60.0
    dwell_fixes: int = 3


@dataclass(slots=True)
class ZoneTrack:
    """What the engine remembers of one zone the van is in or at the edge of.

    Flat fields (not Marks) because the engine's state file is ``asdict`` of it.
    """

    inside: bool = False
    since: float = 0.0  # confirmed crossing: time and place
    since_lat: float = 0.0
    since_lon: float = 0.0
    initial: bool = False  # inside from the first fix: its arrival was not seen
    qualified: bool = False  # a stop visit that counts as an arrival
    run: bool = False  # a run across the boundary is pending
    run_t: float = 0.0  # its estimated crossing
    run_lat: float = 0.0
    run_lon: float = 0.0
    anc_lat: float = 0.0  # the last fix before an enter run (outside)
    anc_lon: float = 0.0
    anc_x: float = 0.0
    anc_y: float = 0.0
    deep_t: float | None = None  # first fix of the run beyond the margin
    deep_n: int = 0
    dwell_t: float | None = None  # first slow fix of the run: a stop near the edge votes
    dwell_in: int = 0
    dwell_out: int = 0
    pos_n: int = 0  # where the van stood while slow inside (sums)
    pos_lat: float = 0.0
    pos_lon: float = 0.0

    @property
    def since_mark(self) -> Mark:
        """The confirmed crossing."""
        return Mark(self.since, self.since_lat, self.since_lon)

    @property
    def run_mark(self) -> Mark:
        """The estimated crossing of the pending run."""
        return Mark(self.run_t, self.run_lat, self.run_lon)

    def start_run(self, at: Mark) -> None:
        """A run across the boundary begins, crossing it at ``at``."""
        self.run = True
        self.run_t, self.run_lat, self.run_lon = at
        self.deep_t, self.deep_n = None, 0
        self.dwell_t, self.dwell_in, self.dwell_out = None, 0, 0

    def end_run(self) -> None:
        """The pending run ended unconfirmed."""
        self.run, self.deep_t, self.deep_n = False, None, 0
        self.dwell_t, self.dwell_in, self.dwell_out = None, 0, 0

    def vote(self, t: float, inside: bool) -> None:
        """One slow fix of the run, inside the zone or not."""
        if self.dwell_t is None:
            self.dwell_t = t
        if inside:
            self.dwell_in += 1
        else:
            self.dwell_out += 1

    def dwelt(self, fixes: int, after: float, t: float, majority: float) -> bool:
        """Whether the van stood in the zone: ``after`` s and ``fixes`` votes since it slowed
        down, more than ``majority`` inside votes for each outside one."""
        return (
            self.dwell_t is not None
            and t - self.dwell_t >= after
            and self.dwell_in + self.dwell_out >= fixes
            and self.dwell_in > majority * self.dwell_out
        )

    def count_deep(self, t: float) -> None:
        """One more fix of the run beyond the margin."""
        if self.deep_t is None:
            self.deep_t = t
        self.deep_n += 1

    def held(self, fixes: int, after: float, t: float) -> bool:
        """Whether the run has been beyond the margin for ``fixes`` fixes and ``after`` s."""
        return self.deep_t is not None and self.deep_n >= fixes and t - self.deep_t >= after

    def confirm_enter(self) -> None:
        """The run into the zone is confirmed: the van is inside since the run's crossing."""
        self.inside = True
        self.since, self.since_lat, self.since_lon = self.run_t, self.run_lat, self.run_lon
        self.end_run()


class Entered:
    """The van is confirmed inside (silently if the track is ``initial``: its entry was not
    seen). One instance, ``ENTERED``: the track is the one ``step`` returns."""

    __slots__ = ()


class Stays:
    """The van is inside, with no run out pending. One instance, ``STAYS`` (as ``Entered``)."""

    __slots__ = ()


ENTERED = Entered()
STAYS = Stays()


@dataclass(frozen=True, slots=True)
class Left:
    """The van is confirmed outside again, having left at ``at``; ``step`` drops the track."""

    track: ZoneTrack
    at: Mark


@dataclass(frozen=True, slots=True)
class Crossed:
    """The van went in at ``enter`` and out at ``leave`` too quickly to confirm either."""

    enter: Mark
    leave: Mark


Transition = Entered | Stays | Left | Crossed


class ZoneTracker:
    """The hysteresis of one zone (see the module docstring)."""

    __slots__ = ("h", "zone")

    def __init__(self, zone: Zone, h: Hysteresis) -> None:
        self.zone = zone
        self.h = h

    def first_sight(self, now: FixPoint) -> ZoneTrack | None:
        """A track for a van found inside at its first fix (or in a zone a new manifest just
        added): it confirms like any other run, but silently, and cannot be a crossing."""
        z = self.zone
        s = z.signed(now.x, now.y)
        if s > 0.0:
            return None
        tr = ZoneTrack(run=True, initial=True, run_t=now.t, run_lat=now.lat, run_lon=now.lon)
        if s <= -z.margin_in:
            tr.count_deep(now.t)
        return tr

    def step(self, tr: ZoneTrack | None, move: Move) -> tuple[ZoneTrack | None, Transition | None]:
        """The track after ``move`` (None: forget it) and what the move did, if anything."""
        z = self.zone
        s = z.signed(move.now.x, move.now.y)
        if tr is None:
            if move.rest_start and 0.0 < s < z.margin_out:
                return self._rest_outside(move), None
            if s > 0.0:
                return None, self._crossed_between(move)
            if move.still:
                return None, None
            return self._outside(ZoneTrack(), move, s)
        if tr.inside:
            return self._inside(tr, move, s)
        return self._outside(tr, move, s)

    def _rest_outside(self, move: Move) -> ZoneTrack:
        """The van came to rest just outside: a run that only its dwelling can confirm (the
        noise may have kept every fix of its drive in outside), from where it came to rest."""
        now, last = move.now, move.last
        tr = ZoneTrack()
        tr.start_run(Mark(now.t, now.lat, now.lon))
        tr.anc_x, tr.anc_y, tr.anc_lat, tr.anc_lon = last.x, last.y, last.lat, last.lon
        tr.vote(now.t, inside=False)
        return tr

    def _crossed_between(self, move: Move) -> Crossed | None:
        """A zone crossed between two fixes both outside it. Noise cannot fake this: the
        segment is at least ``2 * margin_in`` long and runs across the zone, not along it."""
        z = self.zone
        a, b = move.last, move.now
        if (
            move.long
            and not move.still
            and move.seg2 >= 4.0 * z.margin_in * z.margin_in
            and move.plausible()
            and z.passes_deep(a.x, a.y, b.x, b.y)
        ):
            return Crossed(*move.through(z))
        return None

    def _outside(
        self, tr: ZoneTrack, move: Move, s: float
    ) -> tuple[ZoneTrack | None, Transition | None]:
        z, now, h = self.zone, move.now, self.h
        if tr.dwell_t is not None and not move.slow:
            # the rest is over, and the whole stay votes: a short one too is a visit
            if tr.dwelt(h.dwell_fixes, h.dwell_after, now.t, 1.0):
                tr.confirm_enter()
                return tr, ENTERED
            if tr.dwell_out:
                # seen outside: the run ends here, or the van drives in on a run of its own
                # (its crossing is now, not where it first strayed in minutes ago)
                tr.end_run()
                if s > 0.0:
                    return None, None
            else:
                tr.dwell_t, tr.dwell_in = None, 0  # a halt on the way in: the run goes on
        if s > 0.0:
            if tr.run and move.slow:
                # standing at the edge: noise puts some fixes outside; they vote, and only a van
                # that drives off (not slow) ends the run. Depth must be held without a break, as
                # when an outside fix ended the run: a stray fix an hour later is not a second
                tr.vote(now.t, inside=False)
                tr.deep_t, tr.deep_n = None, 0
                return tr, None
            # the run ends unconfirmed: a crossing if the van went across, else jitter
            if tr.run and not tr.initial and z.passes_deep(tr.anc_x, tr.anc_y, now.x, now.y):
                return None, Crossed(tr.run_mark, move.exit(z))
            return None, None
        if not tr.run:
            if move.still:
                return tr, None
            tr.start_run(move.entry(z))
            last = move.last
            tr.anc_x, tr.anc_y, tr.anc_lat, tr.anc_lon = last.x, last.y, last.lat, last.lon
        if s <= -z.margin_in and not tr.dwell_out:
            # a van at rest that was seen outside enters by its vote alone: the noise of a
            # standing receiver wanders, and an hour gives it time to wander margin-deep
            tr.count_deep(now.t)
        if move.slow:
            tr.vote(now.t, inside=True)
        if tr.held(h.enter_fixes, h.enter_after, now.t) or tr.dwelt(
            h.dwell_fixes, STANDING_FACTOR * h.dwell_after, now.t, STANDING_MAJORITY
        ):
            tr.confirm_enter()
            return tr, ENTERED
        return tr, None

    def _inside(
        self, tr: ZoneTrack, move: Move, s: float
    ) -> tuple[ZoneTrack | None, Transition | None]:
        z, now = self.zone, move.now
        if s <= 0.0:
            if tr.run:
                tr.end_run()
            if move.slow:
                tr.pos_n += 1
                tr.pos_lat += now.lat
                tr.pos_lon += now.lon
            return tr, STAYS
        if not tr.run and not move.still:
            tr.start_run(move.exit(z))
        if tr.run and s >= z.margin_out:
            tr.count_deep(now.t)
            if tr.held(self.h.exit_fixes, self.h.exit_after, now.t):
                return None, Left(tr, tr.run_mark)
        return tr, None if tr.run else STAYS
