"""GNSS receiver simulator: drives a route and speaks NMEA over a pty or a TCP socket.

A van follows waypoints (or a GPX track) at realistic speeds (acceleration, braking for stops
and sharp turns, dwell at stops), and a simulated receiver reports it at 1 to 10 Hz with the
sentences of a real one (GGA, RMC, GSA, VTG every epoch, GSV once a second), impaired on demand:
correlated position noise, dropouts (tunnels: the receiver reports no fix), multipath jumps and
a cold start without fix.

The pty transport lets the agent open a real serial device with pyserial: the simulator keeps
a stable symlink to the pty (like ``/dev/serial/by-id/...``), can unplug it (close the pty) and
replug it (a new pty behind the same link), and emulates the receiver's baud rate: when the port
is set to another rate, what arrives is framing garbage, as on a real UART.

Run it::

    python -m simulators.gnss --waypoints "52.3731,4.8922;52.3600,4.8852,60;52.3500,4.9000" \\
        --rate 1 --pty /tmp/gnss0 --noise 2.5 --dropout 120:30 --multipath 0.01 --cold-start 15

then point the agent at ``gnss: {source: /tmp/gnss0}`` (or ``--tcp 127.0.0.1:10110`` and
``socket://127.0.0.1:10110``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import sys
import termios
import tty
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.gnss.fix import Fix
from simulators.nmea_out import fix_to_nmea, gsv_sentences, sentence

__all__ = [
    "Driver",
    "GnssSimulator",
    "Impairments",
    "PtyPort",
    "TcpPort",
    "Truth",
    "Waypoint",
    "load_gpx",
    "main",
    "parse_waypoints",
    "run_simulation",
    "serve_fixes",
]

_EARTH_R = 6_371_008.8
_BAUD_CONSTANTS = {
    getattr(termios, f"B{b}"): b
    for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
    if hasattr(termios, f"B{b}")
}


@dataclass(frozen=True, slots=True)
class Waypoint:
    """A route point; ``dwell_s`` > 0 makes it a stop (the van halts there that long)."""

    lat: float
    lon: float
    dwell_s: float = 0.0


def parse_waypoints(text: str) -> list[Waypoint]:
    """``"lat,lon[,dwell_s];lat,lon;..."`` to waypoints (ValueError naming the bad one)."""
    points = []
    for i, item in enumerate(p for p in text.split(";") if p.strip()):
        parts = item.split(",")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            lat, lon = float(parts[0]), float(parts[1])
            dwell = float(parts[2]) if len(parts) == 3 else 0.0
        except ValueError:
            raise ValueError(f"waypoint {i + 1} {item!r}: expected lat,lon[,dwell_s]") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or dwell < 0:
            raise ValueError(f"waypoint {i + 1} {item!r}: out of range")
        points.append(Waypoint(lat, lon, dwell))
    if len(points) < 2:
        raise ValueError("a route needs at least two waypoints")
    return points


def load_gpx(path: str | Path) -> list[Waypoint]:
    """The track points (or route points, or waypoints) of a GPX file, in order."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"{path}: cannot read GPX: {exc}") from None
    for tag in ("trkpt", "rtept", "wpt"):
        nodes = [n for n in root.iter() if n.tag.rsplit("}", 1)[-1] == tag]
        if len(nodes) >= 2:
            try:
                return [Waypoint(float(n.attrib["lat"]), float(n.attrib["lon"])) for n in nodes]
            except (KeyError, ValueError):
                raise ValueError(f"{path}: a {tag} without a valid lat/lon") from None
    raise ValueError(f"{path}: no track, route or waypoints with two points or more")


def _dist(a: Waypoint, b: Waypoint) -> float:
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dl = math.radians(b.lon - a.lon)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_R * math.asin(min(1.0, math.sqrt(h)))


def _bearing(a: Waypoint, b: Waypoint) -> float:
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dl = math.radians(b.lon - a.lon)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


@dataclass(frozen=True, slots=True)
class Truth:
    """Where the van really is."""

    lat: float
    lon: float
    speed_mps: float
    track_deg: float
    finished: bool


class Driver:
    """Kinematics along a route: accelerate, cruise, brake for turns and stops, dwell.

    ``step(dt)`` advances the van and returns the truth; it is pure given its inputs.
    """

    def __init__(
        self,
        route: Sequence[Waypoint],
        *,
        cruise_mps: float = 13.9,
        accel: float = 1.2,
        decel: float = 1.8,
        turn_mps: float = 5.0,
    ) -> None:
        if len(route) < 2:
            raise ValueError("a route needs at least two waypoints")
        self.route = list(route)
        self.cruise = cruise_mps
        self.accel = accel
        self.decel = decel
        self.turn = turn_mps
        self.lengths = [_dist(a, b) for a, b in zip(self.route, self.route[1:], strict=False)]
        self.bearings = [_bearing(a, b) for a, b in zip(self.route, self.route[1:], strict=False)]
        self.seg = 0
        self.along = 0.0
        self.speed = 0.0
        self.dwell = self.route[0].dwell_s
        self.finished = False

    def _limit_at_end(self, seg: int) -> float:
        """The speed allowed when reaching the end of segment ``seg``."""
        if seg + 1 >= len(self.lengths) or self.route[seg + 1].dwell_s > 0:
            return 0.0
        turn = abs((self.bearings[seg + 1] - self.bearings[seg] + 180.0) % 360.0 - 180.0)
        if turn <= 20.0:
            return self.cruise
        # Sharper turns, slower: 5 m/s at 90 degrees, about walking pace at a U-turn.
        return max(1.5, self.turn * min(1.0, 90.0 / turn)) if turn >= 45 else self.cruise * 0.6

    def _target(self) -> float:
        # The highest speed from which every upcoming limit can still be met by braking.
        target = self.cruise
        ahead = self.lengths[self.seg] - self.along
        seg = self.seg
        while seg < len(self.lengths):
            limit = self._limit_at_end(seg)
            target = min(target, math.sqrt(limit * limit + 2 * self.decel * max(0.0, ahead)))
            if limit == 0.0 or ahead > 2000.0:
                break
            seg += 1
            if seg < len(self.lengths):
                ahead += self.lengths[seg]
        return target

    def _position(self) -> tuple[float, float]:
        a, b = self.route[self.seg], self.route[self.seg + 1]
        length = self.lengths[self.seg]
        f = 0.0 if length == 0 else min(1.0, self.along / length)
        return a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f

    def truth(self) -> Truth:
        """The current state."""
        lat, lon = self._position()
        return Truth(lat, lon, self.speed, self.bearings[self.seg], self.finished)

    def step(self, dt: float) -> Truth:
        """Advance ``dt`` seconds."""
        if self.finished:
            return self.truth()
        if self.dwell > 0:
            self.dwell = max(0.0, self.dwell - dt)
            self.speed = 0.0
            return self.truth()
        target = self._target()
        if self.speed < target:
            self.speed = min(target, self.speed + self.accel * dt)
        else:
            self.speed = max(target, self.speed - self.decel * dt)
        self.along += self.speed * dt
        while self.along >= self.lengths[self.seg] - 0.05:
            over = max(0.0, self.along - self.lengths[self.seg])
            reached = self.route[self.seg + 1]
            if self.seg + 1 >= len(self.lengths):
                self.along = self.lengths[self.seg]
                self.speed = 0.0
                self.finished = True
                break
            self.seg += 1
            self.along = over
            if reached.dwell_s > 0:
                self.along = 0.0
                self.speed = 0.0
                self.dwell = reached.dwell_s
                break
        return self.truth()


@dataclass(slots=True)
class Impairments:
    """What makes the simulated receiver imperfect."""

    noise_m: float = 0.0  # 1-sigma horizontal error, correlated over ``noise_tau_s``
    noise_tau_s: float = 30.0
    dropouts: list[tuple[float, float]] = field(default_factory=list)  # (start_s, length_s)
    multipath_prob: float = 0.0  # chance per epoch of a position jump
    multipath_m: float = 150.0
    cold_start_s: float = 0.0  # no fix (and no date) at first


class GnssSimulator:
    """A receiver following a ``Driver``: one call to ``epoch()`` per output epoch."""

    def __init__(
        self,
        driver: Driver,
        *,
        start: datetime | None = None,
        rate_hz: float = 1.0,
        impairments: Impairments | None = None,
        talker: str = "GP",
        seed: int = 0,
        sats: int = 9,
    ) -> None:
        if not 0.1 <= rate_hz <= 20.0:
            raise ValueError("rate must be between 0.1 and 20 Hz")
        self.driver = driver
        now = start or datetime.now(UTC)
        self.start = now.replace(microsecond=0)
        self.rate = rate_hz
        self.imp = impairments or Impairments()
        self.talker = talker
        self.rng = random.Random(seed)
        self.sats = sats
        self.index = 0
        self._noise = (0.0, 0.0)
        self.alt_m = 12.0

    def _has_fix(self, t: float) -> bool:
        if t < self.imp.cold_start_s:
            return False
        return not any(a <= t < a + n for a, n in self.imp.dropouts)

    def _noisy(self, lat: float, lon: float, dt: float) -> tuple[float, float]:
        imp = self.imp
        north, east = self._noise
        if imp.noise_m > 0:
            a = math.exp(-dt / max(imp.noise_tau_s, 1e-3))
            s = imp.noise_m * math.sqrt(1 - a * a)
            north = a * north + self.rng.gauss(0.0, s)
            east = a * east + self.rng.gauss(0.0, s)
            self._noise = (north, east)
        if imp.multipath_prob > 0 and self.rng.random() < imp.multipath_prob:
            angle = self.rng.uniform(0, 2 * math.pi)
            north += imp.multipath_m * math.cos(angle)
            east += imp.multipath_m * math.sin(angle)
        dlat = math.degrees(north / _EARTH_R)
        dlon = math.degrees(east / (_EARTH_R * max(0.01, math.cos(math.radians(lat)))))
        return lat + dlat, lon + dlon

    def epoch(self) -> tuple[datetime, list[str], Fix | None]:
        """Advance one epoch; return its time, its sentences and the fix they carry (if any)."""
        dt = 1.0 / self.rate
        t = self.index * dt
        if self.index > 0:
            self.driver.step(dt)
        self.index += 1
        when = self.start + timedelta(seconds=t)
        truth = self.driver.truth()
        whole_second = abs(t - round(t)) < 1e-6
        if not self._has_fix(t):
            return when, self._no_fix(when, t, whole_second), None
        lat, lon = self._noisy(truth.lat, truth.lon, dt)
        fix = Fix(
            time=when,
            lat=lat,
            lon=lon,
            alt_m=self.alt_m,
            speed_mps=round(truth.speed_mps, 2),
            track_deg=round(truth.track_deg, 1),
            mode=3,
            quality=1,
            hdop=0.9,
            pdop=1.6,
            sats=self.sats,
        )
        lines = _fix_lines(fix, self.talker, self.sats)
        if whole_second:
            lines += gsv_sentences(self.talker, self.sats + 3, seed=int(t) // 60)
        return when, lines, fix

    def _no_fix(self, when: datetime, t: float, whole_second: bool) -> list[str]:
        cold = t < self.imp.cold_start_s
        hms = f"{when:%H%M%S}.{when.microsecond // 10000:02d}"
        # A cold receiver has no date yet; one in a tunnel keeps time and date.
        date = "" if cold else f"{when:%d%m%y}"
        tk = self.talker
        lines = [
            sentence(f"{tk}GGA,{hms},,,,,0,00,99.99,,,,,,"),
            sentence(f"{tk}RMC,{hms},V,,,,,,,{date},,,N"),
            sentence(f"{tk}GSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
            sentence(f"{tk}VTG,,T,,M,,N,,K,N"),
        ]
        if whole_second:
            lines += gsv_sentences(tk, 0 if cold else 4, seed=int(t) // 60)
        return lines


def _fix_lines(fix: Fix, talker: str, sats: int) -> list[str]:
    return fix_to_nmea(fix, talker=talker, sats_in_view=sats + 3)


def _garble(data: bytes) -> bytes:
    # Framing errors at the wrong rate: no '$', no printable line survives.
    return bytes((b ^ 0xA5) | 0x80 for b in data)


class PtyPort:
    """A pseudo-terminal standing in for a receiver's serial port.

    The agent opens ``path`` (a symlink when ``link`` is given, else the pty itself) with
    pyserial. ``baud`` is the receiver's rate: when the agent sets the port to another one,
    it reads garbage. ``unplug()`` closes the pty (the agent's reads fail), ``replug()``
    creates a new one behind the same symlink.
    """

    def __init__(self, link: str | Path | None = None, *, baud: int = 9600) -> None:
        self.link = Path(link) if link is not None else None
        self.baud = baud
        self.master: int | None = None
        self.tty_name = ""
        self.dropped = 0
        self.garbled = 0
        self.received = bytearray()

    @property
    def path(self) -> str:
        """What the agent should open."""
        return str(self.link) if self.link is not None else self.tty_name

    @property
    def plugged(self) -> bool:
        """Whether the pty exists."""
        return self.master is not None

    def open(self) -> None:
        """Create the pty (plug the receiver in)."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before the agent configures the port
        self.tty_name = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.tty_name)
            tmp.replace(self.link)

    def port_baud(self) -> int | None:
        """The rate the agent set on the port (None if unknown)."""
        if self.master is None:
            return None
        try:
            speed = termios.tcgetattr(self.master)[5]
        except termios.error:
            return None
        return _BAUD_CONSTANTS.get(speed)

    def write(self, data: bytes) -> None:
        """Send bytes as the receiver would; lost when nobody reads or the pty is unplugged."""
        if self.master is None:
            self.dropped += len(data)
            return
        port = self.port_baud()
        if port is not None and port != self.baud:
            data = _garble(data)
            self.garbled += len(data)
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            self.dropped += len(data)
        with contextlib.suppress(BlockingIOError, OSError):
            self.received += os.read(self.master, 4096)  # what the agent wrote (init)

    def unplug(self) -> None:
        """Close the pty; the agent's next read fails, reopening fails until replugged."""
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def replug(self) -> None:
        """A new pty behind the same link."""
        self.unplug()
        self.open()

    def close(self) -> None:
        """Unplug for good."""
        self.unplug()


class TcpPort:
    """NMEA over TCP to every connected client (``socket://host:port`` in the agent)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.connected = asyncio.Event()
        """Set while at least one client is connected."""

    async def start(self) -> None:
        """Listen (``port`` 0 picks a free one, read it back from ``self.port``)."""
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        self.connected.set()
        try:
            while await reader.read(1024):
                pass  # what a client sends is ignored (a receiver ignores unknown input)
        except OSError:
            pass
        finally:
            self._clients.discard(writer)
            if not self._clients:
                self.connected.clear()
            writer.close()

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    def write(self, data: bytes) -> None:
        """Send to every client."""
        for w in list(self._clients):
            if w.is_closing():
                self._clients.discard(w)
                continue
            w.write(data)

    def disconnect_clients(self) -> None:
        """Drop every connection (the agent must reconnect)."""
        for w in list(self._clients):
            w.close()
        self._clients.clear()
        self.connected.clear()

    async def close(self) -> None:
        """Stop listening and drop every client."""
        self.disconnect_clients()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Port:
    def write(self, data: bytes) -> None: ...


async def run_simulation(
    sim: GnssSimulator,
    port: PtyPort | TcpPort | _Port,
    *,
    duration_s: float | None = None,
    time_scale: float = 1.0,
) -> int:
    """Emit epochs in (scaled) real time until ``duration_s`` of simulated time; return count."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    count = 0
    while duration_s is None or count / sim.rate < duration_s:
        _, lines, _ = sim.epoch()
        port.write("".join(lines).encode("ascii"))
        count += 1
        delay = t0 + count / sim.rate / time_scale - loop.time()
        await asyncio.sleep(max(0.0, delay))
    return count


async def serve_fixes(
    fixes: Sequence[Fix],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float = 1.0,
    name: str = "",
    wait_for_client: bool = False,
    on_listen: Callable[[int], None] | None = None,
) -> int:
    """Serve precomputed fixes as NMEA over TCP, paced by their times (``speed``: time scale).

    For the fleet simulator: each van's receiver output on its own socket. ``on_listen`` gets
    the port once listening; with ``wait_for_client`` the first fix waits for a connection.
    Returns the port.
    """
    tcp = TcpPort(host, port)
    await tcp.start()
    print(f"gnss simulator {name}: socket://{tcp.host}:{tcp.port}".strip(), file=sys.stderr)
    if on_listen is not None:
        on_listen(tcp.port)
    loop = asyncio.get_running_loop()
    try:
        if wait_for_client:
            await tcp.connected.wait()
        if fixes:
            t0 = loop.time()
            first = fixes[0].time
            for fix in fixes:
                due = t0 + (fix.time - first).total_seconds() / max(speed, 1e-6)
                await asyncio.sleep(max(0.0, due - loop.time()))
                tcp.write("".join(fix_to_nmea(fix)).encode("ascii"))
    finally:
        await tcp.close()
    return tcp.port


def _parse_dropout(text: str) -> tuple[float, float]:
    start, _, length = text.partition(":")
    try:
        return float(start), float(length)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START_S:LENGTH_S") from None


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators.gnss", description=__doc__)
    route = p.add_mutually_exclusive_group(required=True)
    route.add_argument("--waypoints", help='"lat,lon[,dwell_s];lat,lon;..."')
    route.add_argument("--gpx", help="a GPX file (track, route or waypoints)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--pty", metavar="LINK", help="create a pty and a symlink to it here")
    out.add_argument("--tcp", metavar="HOST:PORT", help="serve NMEA over TCP")
    out.add_argument("--stdout", action="store_true", help="write NMEA to standard output")
    p.add_argument("--rate", type=float, default=1.0, help="epochs per second (1 to 10)")
    p.add_argument("--baud", type=int, default=9600, help="the receiver's baud rate (pty)")
    p.add_argument("--speed-kmh", type=float, default=50.0, help="cruise speed")
    p.add_argument("--noise", type=float, default=0.0, help="1-sigma position noise, metres")
    p.add_argument("--dropout", type=_parse_dropout, action="append", default=[])
    p.add_argument("--multipath", type=float, default=0.0, help="jump probability per epoch")
    p.add_argument("--cold-start", type=float, default=0.0, help="seconds without fix at start")
    p.add_argument("--talker", default="GP")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, help="simulated seconds (default: until stopped)")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per second")
    return p


async def _amain(args: argparse.Namespace) -> int:
    route = parse_waypoints(args.waypoints) if args.waypoints else load_gpx(args.gpx)
    sim = GnssSimulator(
        Driver(route, cruise_mps=args.speed_kmh / 3.6),
        rate_hz=args.rate,
        talker=args.talker,
        seed=args.seed,
        impairments=Impairments(
            noise_m=args.noise,
            dropouts=args.dropout,
            multipath_prob=args.multipath,
            cold_start_s=args.cold_start,
        ),
    )
    port: PtyPort | TcpPort | _Port
    if args.pty:
        pty_port = PtyPort(args.pty, baud=args.baud)
        pty_port.open()
        print(f"gnss simulator: {pty_port.path} -> {pty_port.tty_name}", file=sys.stderr)
        port = pty_port
    elif args.tcp:
        host, _, port_text = args.tcp.rpartition(":")
        tcp = TcpPort(host or "127.0.0.1", int(port_text))
        await tcp.start()
        print(f"gnss simulator: socket://{tcp.host}:{tcp.port}", file=sys.stderr)
        port = tcp
    else:
        stdout = sys.stdout.buffer

        class _Stdout(_Port):
            def write(self, data: bytes) -> None:
                stdout.write(data)
                stdout.flush()

        port = _Stdout()
    try:
        await run_simulation(sim, port, duration_s=args.duration, time_scale=args.time_scale)
    finally:
        if isinstance(port, PtyPort):
            port.close()
        elif isinstance(port, TcpPort):
            await port.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators.gnss``."""
    args = _build_parser().parse_args(argv)
    try:
        return asyncio.run(_amain(args))
    except ValueError as exc:
        print(f"gnss simulator: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
