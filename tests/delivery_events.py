"""Hand-made events for the delivery model's tests: a small route, and envelopes from a device.

``ROUTE`` is a manifest of three stops 1.2 km apart going east from a depot, with windows; a
``Device`` makes valid envelopes (checked with the wire validator) at times given in seconds
after ``T0``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from edge_agent.wire.envelope import format_ts, validate_envelope

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LAT = 52.52
LON0 = 13.40
DLON = 1200.0 / (111_320.0 * 0.6088)  # 1.2 km of longitude at 52.52°N


def at(seconds: float) -> str:
    """``T0`` plus ``seconds`` as a contract time."""
    return format_ts(T0 + timedelta(seconds=seconds))


def lon(km: float) -> float:
    """The longitude ``km`` kilometres east of the depot."""
    return LON0 + DLON * km / 1.2


def manifest(route: str = "r-1", window_end_s: float = 7200.0) -> dict[str, Any]:
    """Three stops at 1.2, 2.4 and 3.6 km east, two parcels each; windows T0 .. +window_end."""
    stops = []
    for k in range(3):
        stops.append(
            {
                "id": f"s{k + 1}",
                "lat": LAT,
                "lon": lon(1.2 * (k + 1)),
                "radius_m": 50,
                "parcels": [f"p{k + 1}a", f"p{k + 1}b"],
                "window": [at(0), at(window_end_s)],
            }
        )
    return {
        "route": route,
        "depot": {"lat": LAT, "lon": LON0, "radius_m": 100},
        "stops": stops,
    }


class Device:
    """Envelopes from one device, seq counting up."""

    def __init__(self, device: str = "van-1", fleet: str = "acme") -> None:
        self.device = device
        self.fleet = fleet
        self.seq = 0

    def ev(
        self,
        type_: str,
        t: float,
        data: dict[str, Any] | None = None,
        ref: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A valid envelope of ``type_`` at ``T0 + t`` seconds."""
        self.seq += 1
        env: dict[str, Any] = {
            "id": f"{self.device}-{self.seq}",
            "seq": self.seq,
            "fleet": self.fleet,
            "device": self.device,
            "type": type_,
            "ts": at(t),
            "clock": "gnss",
            "data": data if data is not None else {},
        }
        if ref:
            env["ref"] = ref
        return validate_envelope(env)

    def fix(self, t: float, km: float, speed: float = 10.0) -> dict[str, Any]:
        """A ``gnss.fix`` ``km`` east of the depot, heading east."""
        data = {"lat": LAT, "lon": lon(km), "mode": 3, "speed_mps": speed, "track_deg": 90.0}
        return self.ev("gnss.fix", t, data)

    def trip(
        self, type_: str, t: float, stop: str | None = None, route: str = "r-1"
    ) -> dict[str, Any]:
        """A trip event (``trip.depart`` / ``approach`` / ``arrive``) at a stop or the depot."""
        ref: dict[str, Any] = {"route": route}
        if stop is not None:
            ref["stop"] = stop
        return self.ev(type_, t, {}, ref)

    def pod(self, t: float, parcel: str, kind: str = "photo", **extra: Any) -> dict[str, Any]:
        """A proof of delivery."""
        return self.ev("pod", t, {"parcel": parcel, "kind": kind, **extra}, {"parcel": parcel})

    def scan(self, t: float, parcel: str, stop: str | None = None) -> dict[str, Any]:
        """A driver's scan of ``parcel``."""
        ref = {"parcel": parcel, **({"stop": stop} if stop else {})}
        return self.ev("scan", t, {"text": parcel, "symbology": "code128", "source": "app"}, ref)


def drive_day(van: Device, *, pods: bool = True) -> list[dict[str, Any]]:
    """A clean run of ``manifest()``: depart at 0, ~10 m/s, 5 min at each stop, back home."""
    out = [van.trip("trip.depart", 0.0)]
    t = 0.0
    km = 0.0
    for k in range(3):
        target = 1.2 * (k + 1)
        while km < target - 0.1:
            t += 10.0
            km = min(target - 0.05, km + 0.1)
            out.append(van.fix(t, km))
        out.append(van.trip("trip.arrive", t + 5, f"s{k + 1}"))
        out.append(van.fix(t + 10, target, speed=0.0))
        if pods:
            for p in ("a", "b"):
                out.append(van.scan(t + 60, f"p{k + 1}{p}", f"s{k + 1}"))
                out.append(van.pod(t + 61, f"p{k + 1}{p}"))
        t += 300.0
        out.append(van.trip("trip.depart", t, f"s{k + 1}"))
        km = target
    t += 600.0
    out.append(van.fix(t, 0.0, speed=0.0))
    out.append(van.trip("trip.arrive", t + 5))
    return out
