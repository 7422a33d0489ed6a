"""NMEA in quantity for differential tests: a seeded receiver with every quirk on a dial.

``receiver(seed)`` draws a ``Receiver``: which sentences it sends (GGA, RMC, GLL, GNS, VTG, GSA,
ZDA, GSV), in which order (so its cycle ends on different sentences), with which talkers (GP,
GN, GL, GA, BD, fixed per sentence or mixed per epoch), its rate (1, 2, 5 or 10 Hz, times with
0 to 3 decimals), and how it misbehaves: orders shuffled within an epoch, a sentence slipping
into the next epoch, sentences lagging an epoch (a GGA carrying the time and position of one
second before its RMC and GLL), dropped and repeated sentences, a date 1024 weeks in the past
(GPS week rollover), one GSA per constellation, and a fix that comes and goes (3D, 2D, no fix).
``generate(receiver, epochs)`` returns the log as bytes; the same seed gives the same bytes.

No truth is returned on purpose: the oracle is gpsd itself (``tests/test_gpsd_oracle.py`` feeds
the same bytes to gpsd and to the agent and requires the same fixes).

    python -m simulators.nmea_fuzz --seed 7 --epochs 100 > fuzz7.nmea
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from simulators.nmea_out import sentence

__all__ = ["KINDS", "TALKERS", "Receiver", "generate", "main", "receiver"]

KINDS = ("GGA", "RMC", "GLL", "GNS", "VTG", "GSA", "ZDA", "GSV")
TALKERS = ("GP", "GN", "GL", "GA", "BD")
_ROLLOVER = timedelta(weeks=1024)
_KNOTS_PER_MPS = 3600.0 / 1852.0


@dataclass(frozen=True)
class Receiver:
    """One simulated receiver's habits (see the module docstring); ``receiver(seed)`` draws one."""

    seed: int
    kinds: tuple[str, ...]  # the sentences of an epoch, in the receiver's order
    talkers: dict[str, str] = field(default_factory=dict)  # per kind; "" = mixed per epoch
    rate_hz: int = 1
    decimals: int = 2  # of the time of day
    start: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    shuffle: float = 0.0  # chance an epoch's order is shuffled
    slip: float = 0.0  # chance an epoch's last sentence comes after the next epoch's first
    lagging: frozenset[str] = frozenset()  # kinds carrying the previous epoch's time and position
    stale: frozenset[str] = frozenset()  # kinds carrying this epoch's time, the previous position
    drop: float = 0.0  # chance a sentence is missing
    repeat: float = 0.0  # chance a sentence is sent twice
    rollover: bool = False  # dates 1024 weeks early
    gsa_per_system: bool = False
    outage: float = 0.0  # chance per epoch that a no-fix or 2D spell starts
    pos_decimals: int = 4  # of the minutes of latitude and longitude

    def describe(self) -> str:
        """A one-line summary, for test failure messages."""
        return (
            f"seed={self.seed} kinds={','.join(self.kinds)} talkers={self.talkers} "
            f"rate={self.rate_hz}Hz shuffle={self.shuffle} slip={self.slip} "
            f"lagging={sorted(self.lagging)} stale={sorted(self.stale)} "
            f"drop={self.drop} repeat={self.repeat} "
            f"rollover={self.rollover} gsa_per_system={self.gsa_per_system} outage={self.outage}"
        )


def receiver(seed: int, *, without: Sequence[str] = ()) -> Receiver:
    """A receiver drawn from ``seed``: most draws are ordinary, a good share are quirky.

    ``without`` names sentence kinds it never sends (the draws of the others stay the same).
    """
    rnd = random.Random(seed)
    kinds = [k for k in KINDS if rnd.random() < {"GGA": 0.85, "RMC": 0.8}.get(k, 0.4)]
    kinds = [k for k in kinds if k not in without]
    if not any(k in kinds for k in ("GGA", "RMC", "GLL", "GNS")):
        kinds.append(rnd.choice([k for k in ("GGA", "RMC", "GLL", "GNS") if k not in without]))
    if "RMC" not in kinds and "ZDA" not in kinds and rnd.random() < 0.8:
        # Most receivers say the date somewhere.
        kinds.append(rnd.choice([k for k in ("RMC", "ZDA") if k not in without] or ["RMC"]))
    rnd.shuffle(kinds)
    style = rnd.random()
    main = rnd.choice(("GP", "GN"))
    talkers: dict[str, str] = {}
    for k in kinds:
        if style < 0.5:
            talkers[k] = main
        elif style < 0.85:
            talkers[k] = rnd.choice(TALKERS)
        else:
            talkers[k] = ""
    quirky = rnd.random() < 0.7
    lag_from = [k for k in ("GGA", "GNS", "GLL") if k in kinds]
    lagging = frozenset(
        {rnd.choice(lag_from)} if quirky and lag_from and rnd.random() < 0.3 else set()
    )
    stale = frozenset(
        {rnd.choice(lag_from)}
        if quirky and lag_from and not lagging and rnd.random() < 0.3
        else set()
    )
    day = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(days=rnd.randrange(2900))
    # A third of the logs start just before midnight: the date must roll with the time.
    second = 86_400 - rnd.randrange(5, 120) if rnd.random() < 0.3 else rnd.randrange(86_400)
    rate = rnd.choice((1, 1, 1, 2, 5, 10))
    return Receiver(
        seed=seed,
        kinds=tuple(kinds),
        talkers=talkers,
        rate_hz=rate,
        # Whole seconds only at 1 Hz: faster receivers need the fraction to tell epochs apart.
        decimals=rnd.choice((0, 1, 2, 2, 3) if rate == 1 else (1, 2, 2, 3)),
        start=day + timedelta(seconds=second),
        shuffle=rnd.choice((0.0, 0.05, 0.3)) if quirky else 0.0,
        slip=rnd.choice((0.0, 0.05, 0.2)) if quirky else 0.0,
        lagging=lagging,
        stale=stale,
        drop=rnd.choice((0.0, 0.02, 0.1)) if quirky else 0.0,
        repeat=rnd.choice((0.0, 0.02, 0.1)) if quirky else 0.0,
        rollover=quirky and rnd.random() < 0.2,
        gsa_per_system="GSA" in kinds and rnd.random() < 0.3,
        outage=rnd.choice((0.0, 0.02, 0.08)),
        pos_decimals=rnd.choice((4, 5, 6)),
    )


@dataclass
class _State:
    """The receiver's truth at one epoch."""

    when: datetime
    lat: float
    lon: float
    alt: float
    speed: float
    track: float
    mode: int  # 1 no fix, 2, 3
    sats: int


def _hms(t: datetime, decimals: int) -> str:
    base = f"{t:%H%M%S}"
    if decimals == 0:
        return base
    frac = f"{t.microsecond:06d}"[:decimals]
    return f"{base}.{frac}"


def _coord(value: float, is_lat: bool, decimals: int) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if is_lat else ("E" if value >= 0 else "W")
    a = abs(value)
    deg = int(a)
    minutes = round((a - deg) * 60.0, decimals)
    if minutes >= 60.0:
        deg, minutes = deg + 1, 0.0
    width = 3 + decimals
    return f"{deg:0{2 if is_lat else 3}d}{minutes:0{width}.{decimals}f}", hemi


class _Writer:
    """Turns states into the receiver's sentences."""

    def __init__(self, rx: Receiver, rnd: random.Random) -> None:
        self.rx = rx
        self.rnd = rnd

    def talker(self, kind: str) -> str:
        t = self.rx.talkers.get(kind, "GP")
        return t or self.rnd.choice(TALKERS)

    def date(self, s: _State) -> datetime:
        return s.when - _ROLLOVER if self.rx.rollover else s.when

    def one(self, kind: str, s: _State) -> list[str]:
        rx = self.rx
        tk = self.talker(kind)
        hms = _hms(s.when, rx.decimals)
        fix = s.mode >= 2
        lat, ns = _coord(s.lat, True, rx.pos_decimals) if fix else ("", "")
        lon, ew = _coord(s.lon, False, rx.pos_decimals) if fix else ("", "")
        faa = "A" if fix else "N"
        kn = f"{s.speed * _KNOTS_PER_MPS:.3f}"
        trk = f"{s.track:.2f}"
        if kind == "GGA":
            q = "1" if fix else "0"
            alt = f"{s.alt:.1f}" if s.mode == 3 else ""
            sats = f"{s.sats:02d}" if fix else "00"
            hdop = "0.9" if fix else ""
            unit = "M" if alt else ""
            body = f"{tk}GGA,{hms},{lat},{ns},{lon},{ew},{q},{sats},{hdop},{alt},{unit},47.0,M,,"
        elif kind == "RMC":
            st = "A" if fix else "V"
            ddmmyy = f"{self.date(s):%d%m%y}"
            body = f"{tk}RMC,{hms},{st},{lat},{ns},{lon},{ew},{kn},{trk},{ddmmyy},,,{faa}"
        elif kind == "GLL":
            st = "A" if fix else "V"
            body = f"{tk}GLL,{lat},{ns},{lon},{ew},{hms},{st},{faa}"
        elif kind == "GNS":
            modes = ("A" if fix else "N") + self.rnd.choice(("", "A", "N", "AA"))
            alt = f"{s.alt:.1f}" if s.mode == 3 else ""
            sats = f"{s.sats:02d}" if fix else "00"
            body = f"{tk}GNS,{hms},{lat},{ns},{lon},{ew},{modes},{sats},0.9,{alt},47.0,,"
        elif kind == "VTG":
            kmh = f"{s.speed * 3.6:.3f}"
            body = f"{tk}VTG,{trk},T,,M,{kn},N,{kmh},K,{faa}"
        elif kind == "ZDA":
            d = self.date(s)
            body = f"{tk}ZDA,{hms},{d:%d},{d:%m},{d:%Y},00,00"
        elif kind == "GSA":
            out = []
            systems = ("GP", "GL", "GA") if self.rx.gsa_per_system else (tk,)
            for i, sys_tk in enumerate(systems):
                n = max(0, s.sats // len(systems) - i) if s.mode >= 2 else 0
                prns = [f"{1 + (i * 32 + j * 5) % 96:02d}" for j in range(n)][:12]
                prns += [""] * (12 - len(prns))
                body = f"{sys_tk}GSA,A,{s.mode},{','.join(prns)},1.6,0.9,1.3"
                out.append(sentence(body))
            return out
        else:  # GSV
            n = s.sats + 3
            total = (n + 3) // 4
            out = []
            for m in range(1, total + 1):
                sv = [f"{tk}GSV", str(total), str(m), f"{n:02d}"]
                for i in range((m - 1) * 4, min(n, m * 4)):
                    sv += [
                        f"{1 + i * 3:02d}",
                        f"{10 + i * 7 % 80:02d}",
                        f"{i * 41 % 360:03d}",
                        "35",
                    ]
                out.append(sentence(",".join(sv)))
            return out
        return [sentence(body)]


def _states(rx: Receiver, epochs: int, rnd: random.Random) -> list[_State]:
    step = timedelta(seconds=1) / rx.rate_hz
    lat = rnd.uniform(-60.0, 60.0)
    lon = rnd.uniform(-179.0, 179.0)
    track = rnd.uniform(0.0, 360.0)
    speed = rnd.uniform(0.0, 20.0)
    mode, spell = 3, 0
    out = []
    when = rx.start
    for _ in range(epochs):
        if spell > 0:
            spell -= 1
            if spell == 0:
                mode = 3
        elif rnd.random() < rx.outage:
            mode, spell = rnd.choice((1, 1, 2)), rnd.randrange(1, 8)
        speed = min(30.0, max(0.0, speed + rnd.gauss(0.0, 0.5)))
        track = (track + rnd.gauss(0.0, 5.0)) % 360.0
        d = speed / rx.rate_hz
        lat += d * math.cos(math.radians(track)) / 111_195.0
        lon += (
            d * math.sin(math.radians(track)) / (111_195.0 * max(0.2, math.cos(math.radians(lat))))
        )
        out.append(
            _State(
                when, lat, lon, 20.0 + rnd.uniform(-1, 1), speed, track, mode, rnd.randrange(4, 14)
            )
        )
        when += step
    return out


def generate(rx: Receiver, epochs: int = 100) -> bytes:
    """The log of ``epochs`` epochs of receiver ``rx`` (deterministic in ``rx.seed``)."""
    rnd = random.Random(rx.seed * 7919 + epochs)
    states = _states(rx, epochs, rnd)
    w = _Writer(rx, rnd)
    lines: list[str] = []
    slipped: list[str] = []
    for i, s in enumerate(states):
        order = list(rx.kinds)
        if rnd.random() < rx.shuffle:
            rnd.shuffle(order)
        epoch: list[str] = []
        for kind in order:
            if rnd.random() < rx.drop:
                continue
            src = states[i - 1] if kind in rx.lagging and i > 0 else s
            if kind in rx.lagging and i == 0:
                continue  # nothing to lag behind yet
            if kind in rx.stale and i > 0:
                prev = states[i - 1]
                src = replace(s, lat=prev.lat, lon=prev.lon, alt=prev.alt, mode=prev.mode)
            out = w.one(kind, src)
            epoch += out
            if rnd.random() < rx.repeat:
                epoch += out
        # A sentence held back by the previous epoch comes right after this one's first.
        if slipped and epoch:
            epoch[1:1] = slipped
        elif slipped:
            epoch = slipped
        slipped = []
        if len(epoch) > 1 and rnd.random() < rx.slip:
            slipped = [epoch.pop()]
        lines += epoch
    lines += slipped
    return "".join(lines).encode("ascii")


def main(argv: Sequence[str] | None = None) -> int:
    """Write one generated log to stdout."""
    ap = argparse.ArgumentParser(
        prog="python -m simulators.nmea_fuzz", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--describe", action="store_true", help="print the receiver's habits to stderr")
    args = ap.parse_args(argv)
    rx = receiver(args.seed)
    if args.describe:
        print(rx.describe(), file=sys.stderr)
    sys.stdout.buffer.write(generate(rx, args.epochs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
