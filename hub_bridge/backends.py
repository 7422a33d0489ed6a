"""Opening the hub's stores by URL: ``timeline.url`` chooses SQLite or PostgreSQL (DESIGN §4, §5).

The interfaces live beside what they describe (``hub_bridge.store.TimelineStore``,
``hub_bridge.delivery.store.DeliveryStore``); this module only chooses and opens an
implementation, so that no interface imports its implementations (and a hub on SQLite never loads
the PostgreSQL driver).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from hub_bridge.delivery.store import DeliveryStore, DeliveryStoreError
from hub_bridge.store import TimelineStore
from hub_bridge.timeline import TimelineError, TimelineLimits

__all__ = ["open_delivery_store", "open_timeline", "sqlite_path_of"]


def sqlite_path_of(url: str) -> str:
    """``sqlite:///var/x.db`` → ``/var/x.db``; ``sqlite:///./x.db`` → ``./x.db``."""
    rest = url[len("sqlite://") :]
    if rest.startswith("/./"):
        return rest[1:]
    return rest


async def open_timeline(url: str, limits: TimelineLimits | None = None) -> TimelineStore:
    """Open (and migrate) the timeline ``url`` names: ``sqlite:///path`` or ``postgresql://…``.

    Raises ``TimelineError`` for a store that cannot be used (newer schema, unknown scheme).
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from hub_bridge.timeline import Timeline

        return await Timeline.open(sqlite_path_of(url), limits)
    if scheme in ("postgresql", "postgres"):
        from hub_bridge.timeline_pg import PgTimeline  # the driver only where it is used

        return await PgTimeline.open(url, limits)
    raise TimelineError(f"{url!r}: the scheme must be sqlite:// or postgresql://")


async def open_delivery_store(url: str) -> DeliveryStore:
    """Open (and migrate) the delivery tables in the database of the timeline ``url``."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from hub_bridge.delivery.store_sqlite import SqliteDeliveryStore

        return await SqliteDeliveryStore.open(sqlite_path_of(url))
    if scheme in ("postgresql", "postgres"):
        from hub_bridge.delivery.store_pg import PgDeliveryStore  # the driver only where used

        return await PgDeliveryStore.open(url)
    raise DeliveryStoreError(f"{url!r}: the scheme must be sqlite:// or postgresql://")
