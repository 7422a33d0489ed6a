"""A stateful property test of the spine: the real outbox, local API, uplink, broker, hub bridge
and timeline, driven by hypothesis through random sequences of posts (valid and hostile),
evictions, kills, broker loss, forged and stale acks and file loss, against a reference model.

The pieces run in one process (``tests/spine_rig.py``): a private mosquitto per run, the agent's
API on a real port (clients speak HTTP), the uplink and the hub bridge as tasks in one loop, the
outbox and the timeline on real SQLite files. A kill cancels a task and (``crash``) abandons the
outbox without its last commit or ack; file loss deletes the outbox file, with or without its seq
floor file (``outbox.db.seq``).

The model remembers every event a POST was answered 201 for (id, content, low value or kept),
every seq the agent handed out and where a rebase moved an event (a spy on ``Outbox.rebase``
reports the renumbered seqs). What must hold:

After every step
    - neither the uplink nor the hub task ever ends by itself;
    - every event in the timeline is one the agent accepted, at a seq the agent gave it (or
      moved it to), or a life-cycle event of the agent's own (``outbox.evicted``, alarms);
    - the agent never holds an ack beyond the hub's real watermark (only while no forged ack was
      published: a forger can make it believe one, as far as it published);
    - every answer is documented: 201, 400, 409 (id reused for another event), 413 (event over
      the batch limit), 507 (full); hostile bodies are refused and store nothing.
When seqs are handed out (each 201)
    - a new event's seq is above every seq handed out before: seqs never repeat or go back,
      whatever happened to the file, as long as the device kept a record of its seqs (its
      outbox file or its seq floor file). With both deleted the device has no record left and
      starts again from 1: then the hub's proof (its retained ack) must move the new events to
      fresh seqs before they can be confused with the old ones, which the timeline checks below
      catch;
    - no seq exceeds 2**53 - 1 (the contract's bound: the hub would refuse it);
    - a client id the agent still remembers answers the event's current seq; with other content,
      409 and nothing stored.
When settled (the ``settle`` rule, and at the end of every run): broker and hub up
    - progress: within ``PROGRESS_S`` the hub's watermark reaches the agent's last seq and the
      outbox is empty; a new POST is then accepted (a refusal does not outlive its cause);
    - every accepted kept event is in the timeline exactly once (by id) with the content posted,
      unless its outbox file was deleted before the hub had it;
    - a low-value event (or one lost with its file) is there at most once, and when missing,
      one of its seqs is accounted for at the hub (an ``outbox.evicted`` notice: size cap,
      corrupt/renumbered, or acked earlier).

Disk full is not driven here (it needs a small file system, a tmpfs mount, which needs root); the
outbox tests cover it. ``LM_SPINE_EXAMPLES=200`` explores more (not derandomized).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from edge_agent.wire.envelope import SEQ_MAX
from simulators.broker import Mosquitto
from tests.spine_rig import Limits, Rig, TimelineRow

pytestmark = [
    pytest.mark.slow,
    # an exploration (LM_SPINE_EXAMPLES) runs as long as it was asked to
    pytest.mark.timeout(0 if os.environ.get("LM_SPINE_EXAMPLES") else 300),
]

PROGRESS_S = 50.0
"""Bound on reaching the end of the queue once everything is up. The hub's reconnect backoff is
capped at 30 s (not configurable), the agent's here at 0.5 s, its ack timeout 1 s."""

LIFECYCLE_TYPES = frozenset({"outbox.evicted", "device.health"})

_EXAMPLES = int(os.environ.get("LM_SPINE_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=_EXAMPLES or 30,
    stateful_step_count=20,
    deadline=None,
    derandomize=not _EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    report_multiple_bugs=False,
)

KINDS = ("scan", "pod", "gnss.fix")

F = TypeVar("F")


def logged(fn: F) -> F:
    """Record the rule and its arguments in the machine's trace (printed when a run fails:
    a failure that depends on timing does not always replay, and then hypothesis prints no
    steps)."""
    inner: Any = fn

    @functools.wraps(inner)
    def wrapper(self: SpineMachine, **kw: Any) -> Any:
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        self.trace.append(f"{inner.__name__}({args})")
        return inner(self, **kw)

    return wrapper  # type: ignore[return-value]


@dataclass(slots=True)
class Ev:
    """What the model knows of one accepted event."""

    id: str
    type: str
    data: dict[str, Any]
    client_id: bool
    seqs: set[int] = field(default_factory=set)
    cur: int = 0
    epoch: int = 0
    """The file epoch of its latest acceptance: the agent remembers its client id in that one."""
    excused: bool = False
    unrecorded: bool = False
    """Lost with its file and the seq floor before the hub had it: no record of it is left
    anywhere, so nothing can announce it (the one loss a device cannot account for)."""
    """Its outbox file was deleted before the hub had it: it may be missing (announced)."""

    @property
    def low(self) -> bool:
        return self.type == "gnss.fix"

    @property
    def forged_notice(self) -> bool:
        return self.type == "outbox.evicted"


def hostile_bodies(limits: Limits) -> list[tuple[str, bytes, set[int]]]:
    """(name, raw body, the answers it may get): each must be refused and store nothing."""
    good = {"type": "scan", "data": {"text": "OK-1", "symbology": "code128", "source": "app"}}

    def scan(**data: Any) -> dict[str, Any]:
        return {"type": "scan", "data": {"symbology": "code128", "source": "app", **data}}

    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    over = limits.max_batch + 1
    surrogate = b'{"type":"scan","data":{"text":"\\ud800","symbology":"c","source":"a"}}'
    return [
        ("deep nesting", json.dumps(scan(text="x", deep=deep)).encode(), {400}),
        ("lone surrogate", surrogate, {400}),
        ("NaN", b'{"type":"gnss.fix","data":{"lat":NaN,"lon":0,"mode":3}}', {400}),
        ("Infinity", b'{"type":"gnss.fix","data":{"lat":1,"lon":-Infinity,"mode":3}}', {400}),
        ("5000 digits", b'{"type":"scan","data":{"text":"x","symbology":"c","source":"a","n":'
         + b"9" * 5000 + b"}}", {400}),
        ("2**63", json.dumps(scan(text="x", n=2**63)).encode(), {400}),
        ("lat 91", json.dumps({"type": "gnss.fix", "data": {"lat": 91, "lon": 0, "mode": 3}})
         .encode(), {400}),
        ("unknown type", json.dumps({"type": "nope.nope", "data": {}}).encode(), {400}),
        ("unknown field", json.dumps({**good, "seq": 5}).encode(), {400}),
        ("bad id", json.dumps({**good, "id": "has space"}).encode(), {400}),
        ("empty batch", b"[]", {400}),
        ("batch over max", json.dumps([good] * over).encode(), {400}),
        ("one bad in a batch", json.dumps([good, good, {"type": "scan", "data": {}}]).encode(),
         {400}),
        ("surrogate in a batch", b"[" + json.dumps(good).encode()
         + b',{"type":"scan","data":{"text":"\\udfff","symbology":"c","source":"a"}}]', {400}),
        ("not JSON", b'{"type":', {400}),
        ("not UTF-8", b'{"type":"scan","data":{"text":"\xff\xfe"}}', {400}),
        ("a scalar", b"42", {400}),
        ("over the batch limit", json.dumps(scan(text="Z" * (limits.batch_max_bytes + 200)))
         .encode(), {413}),
    ]  # fmt: skip


class SpineMachine(RuleBasedStateMachine):
    """Agent, broker and hub under random actions; the model says what must be true."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spine-"))
        self.broker = Mosquitto()
        self.broker.start()
        self.limits = Limits()
        self.hostile = hostile_bodies(self.limits)
        self.rig = Rig(self.dir, self.broker, self.limits)
        self.lock = threading.Lock()
        self.events: dict[str, Ev] = {}
        self.handed: dict[int, str] = {}
        self.max_handed = 0
        self.moved_to: dict[str, set[int]] = {}
        """Every seq a renumbering gave each id (the highest is where it is now): two
        renumberings may both come before the model records the POST's answer."""
        self.file_epoch = 0
        self.ack_forged = False
        self.counter = 0
        self.trace: list[str] = []
        self.rig.on_rebase = self._on_rebase
        self.rig.start_hub()
        self.rig.start_agent()

    # -- the model ---------------------------------------------------------------------------

    def _on_rebase(self, pairs: list[tuple[int, str]]) -> None:
        # runs in the rig's loop: the seqs the outbox moved its unacked events to
        with self.lock:
            for seq, eid in pairs:
                self.moved_to.setdefault(eid, set()).add(seq)
                ev = self.events.get(eid)
                if ev is not None and seq not in ev.seqs:
                    ev.seqs.add(seq)
                    ev.cur = max(ev.cur, seq)
                if seq > self.max_handed:
                    self.handed[seq] = eid
                    self.max_handed = seq

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _event(self, kind: str, *, client_id: bool) -> dict[str, Any]:
        n = self._next()
        if kind == "scan":
            data: dict[str, Any] = {"text": f"P{n:06d}", "symbology": "code128", "source": "app"}
        elif kind == "pod":
            data = {"parcel": f"P{n:06d}", "kind": "signature"}
        else:
            data = {"lat": 48.0 + n / 1e4, "lon": 11.0 + n / 1e4, "mode": 3, "hdop": 0.9}
        body: dict[str, Any] = {"type": kind, "data": data}
        if client_id:
            body["id"] = f"app-{n:06d}"
        return body

    def _record(self, sent: list[dict[str, Any]], answers: list[dict[str, Any]]) -> None:
        """Check and record what a 201 said about the events sent."""
        assert len(answers) == len(sent), (sent, answers)
        # an answer may carry a seq a renumbering gave before the model heard of it
        self.rig.wait_rebases()
        seen_in_post: dict[str, int] = {}
        for body, ans in zip(sent, answers, strict=True):
            eid, seq = str(ans["id"]), int(ans["seq"])
            assert 1 <= seq <= SEQ_MAX, f"seq {seq} handed out is outside 1..2**53-1"
            if "id" in body:
                assert eid == body["id"], f"the client id {body['id']} came back as {eid}"
            with self.lock:
                ev = self.events.get(eid)
                remembered = ev is not None and ev.epoch == self.file_epoch
                if eid in seen_in_post:
                    assert seq == seen_in_post[eid], f"id {eid} twice in one POST: two seqs"
                    continue
                seen_in_post[eid] = seq
                if remembered:
                    assert ev is not None
                    ok = seq == ev.cur or seq in ev.seqs or seq in self.moved_to.get(eid, ())
                    assert ok, (
                        f"client id {eid} reposted: seq {seq}, but the agent gave it"
                        f" {sorted(ev.seqs)} (now {ev.cur})"
                    )
                    continue
                # a new event (or a client id the agent had no record of any more)
                owner = self.handed.get(seq)
                assert owner is None or owner == eid, (
                    f"seq {seq} handed to {eid} was handed to {owner} before: a seq reused"
                )
                moved = max(self.moved_to[eid]) if eid in self.moved_to else None
                if moved is None:
                    assert seq > self.max_handed, (
                        f"seq {seq} for {eid} is not above {self.max_handed}, handed out before"
                    )
                else:
                    # the renumbering of this very event (an ack proving the hub holds seqs
                    # this file does not) reached the model before the POST's answer did:
                    # the answer is the seq it had before it was moved up (or kept)
                    assert seq <= moved, f"{eid} answered seq {seq}, moved to {moved} before"
                self.handed[seq] = eid
                self.max_handed = max(self.max_handed, seq)
                if ev is None:
                    ev = Ev(eid, body["type"], body["data"], "id" in body)
                    self.events[eid] = ev
                moves = self.moved_to.get(eid, set())
                ev.seqs |= {seq, *moves}
                ev.cur = max({seq, *moves})
                ev.epoch = self.file_epoch
                ev.excused = False
                ev.unrecorded = False

    def _assert_nothing_stored(self, before: int, what: str) -> None:
        """Seqs assigned since ``before`` may only be the agent's own life-cycle events, or
        accepted events a rebase moved there."""
        last, _, _ = self.rig.agent_view()
        if last <= before:
            return
        rows = self.rig.outbox_after(before)
        with self.lock:
            client = {
                s: row
                for s, row in rows.items()
                if row[0] not in LIFECYCLE_TYPES and row[1] not in self.events
            }
        assert not client, f"{what}: refused, yet events were stored: {client}"

    def _post_valid(self, sent: list[dict[str, Any]]) -> None:
        body: Any = sent if len(sent) > 1 else sent[0]
        before, _, _ = self.rig.agent_view()
        status, answer = self.rig.post(body)
        if status == 201:
            self._record(sent, answer if isinstance(answer, list) else [answer])
        elif status == 507:
            self._assert_nothing_stored(before, "507")
        else:
            raise AssertionError(f"a valid POST got {status}: {answer}")

    # -- rules: clients ----------------------------------------------------------------------

    @rule(kind=st.sampled_from(KINDS), client_id=st.booleans())
    @logged
    def post_one(self, kind: str, client_id: bool) -> None:
        """One event, as the driver's app posts it."""
        self._post_valid([self._event(kind, client_id=client_id)])

    @rule(
        kinds=st.lists(st.sampled_from(KINDS), min_size=2, max_size=8),
        client_ids=st.booleans(),
    )
    @logged
    def post_batch(self, kinds: list[str], client_ids: bool) -> None:
        """A backlog in one POST: all or nothing."""
        self._post_valid([self._event(k, client_id=client_ids) for k in kinds])

    @rule(fixes=st.integers(10, 40), scans=st.integers(0, 3))
    @logged
    def post_backlog_of_fixes(self, fixes: int, scans: int) -> None:
        """Many position pings: past the cap the outbox thins them (and announces it)."""
        kinds = ["gnss.fix"] * fixes + ["scan"] * scans
        self._post_valid([self._event(k, client_id=False) for k in kinds])

    @rule(index=st.integers(0, 10_000), same=st.booleans())
    @logged
    def repost_client_id(self, index: int, same: bool) -> None:
        """A client retries (same content: same seq) or reuses an id for another event (409)."""
        # drawn as an index, not from the ids: which POSTs got 201 depends on timing, and what
        # hypothesis draws must not
        ids = sorted(eid for eid, ev in self.events.items() if ev.client_id)
        if not ids:
            return
        ev = self.events[ids[index % len(ids)]]
        eid = ev.id
        if same:
            self._post_valid([{"type": ev.type, "data": ev.data, "id": eid}])
            return
        if ev.epoch != self.file_epoch:
            return  # the agent lost its record of the id with its file: it cannot tell
        other = self._event(ev.type, client_id=False)
        other["id"] = eid
        before, _, _ = self.rig.agent_view()
        status, answer = self.rig.post(other)
        assert status == 409, f"id {eid} reused for another event: {status} {answer}"
        self._assert_nothing_stored(before, "409")

    @rule(index=st.integers(0, 10_000))
    @logged
    def post_hostile(self, index: int) -> None:
        """A body no client should send: refused with its documented answer, nothing stored."""
        name, raw, allowed = self.hostile[index % len(self.hostile)]
        before, _, _ = self.rig.agent_view()
        status, answer = self.rig.post(raw)
        assert status in allowed, f"{name}: {status} {answer}"
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer
        self._assert_nothing_stored(before, name)

    @rule(index=st.integers(0, 10_000), good=st.integers(2, 6))
    @logged
    def post_concurrently(self, index: int, good: int) -> None:
        """Good POSTs sharing a group commit with a hostile one: only the hostile one fails."""
        name, raw, allowed = self.hostile[index % len(self.hostile)]
        bodies = [self._event("scan", client_id=False) for _ in range(good)]
        with ThreadPoolExecutor(good + 1) as pool:
            bad = pool.submit(self.rig.post, raw)
            oks = [pool.submit(self.rig.post, b) for b in bodies]
            results = [f.result() for f in oks]
            bad_status, bad_answer = bad.result()
        assert bad_status in allowed, f"{name} (concurrent): {bad_status} {bad_answer}"
        accepted = []
        for body, (status, answer) in zip(bodies, results, strict=True):
            assert status in (201, 507), f"a good POST next to {name!r} got {status}: {answer}"
            if status == 201:
                accepted.append((int(answer["seq"]), body, answer))
        # one group commit gives seqs in the order the POSTs arrived, not the order sent
        for _, body, answer in sorted(accepted, key=lambda a: a[0]):
            self._record([body], [answer])

    @rule(span=st.integers(1, 5))
    @logged
    def post_eviction_notice(self, span: int) -> None:
        """A client posts an ``outbox.evicted`` notice of its own about the seqs to come."""
        last, _, _ = self.rig.agent_view()
        lo = last + 2
        notice = {
            "type": "outbox.evicted",
            "data": {"ranges": [[lo, lo + span - 1]], "count": span, "reason": "size-cap"},
        }
        status, answer = self.rig.post(notice)
        # the outbox's own notices account for seqs at the hub: no client may send one
        assert status == 400, f"a client's eviction notice: {status} {answer}"

    # -- rules: faults -----------------------------------------------------------------------

    @precondition(lambda self: self.broker.proc is not None)
    @rule()
    @logged
    def broker_restart(self) -> None:
        """The broker is killed and started again, without persistence: its queues are gone."""
        self.broker.restart()

    @precondition(lambda self: self.broker.proc is not None)
    @rule()
    @logged
    def broker_down(self) -> None:
        """The broker dies and stays down for a while."""
        self.broker.kill()

    @precondition(lambda self: self.broker.proc is None)
    @rule()
    @logged
    def broker_up(self) -> None:
        """The broker comes back (empty)."""
        self.broker.start()

    @precondition(lambda self: self.rig.hub_up)
    @rule()
    @logged
    def hub_down(self) -> None:
        """The hub bridge task is cancelled (a stopped or crashed hub)."""
        self.rig.stop_hub()

    @precondition(lambda self: not self.rig.hub_up)
    @rule(new_timeline=st.booleans())
    @logged
    def hub_up(self, new_timeline: bool) -> None:
        """The hub starts again, on the same timeline object or on a new one of the same file."""
        self.rig.start_hub(new_timeline=new_timeline)

    @rule(crash=st.booleans())
    @logged
    def agent_restart(self, crash: bool) -> None:
        """The agent stops (cleanly, or abandoned as a SIGKILL leaves it) and starts again."""
        self.rig.stop_agent(crash=crash)
        self.rig.start_agent()

    @rule(keep_seq_floor=st.booleans(), crash=st.booleans())
    @logged
    def lose_outbox_file(self, keep_seq_floor: bool, crash: bool) -> None:
        """The outbox file is lost (a replaced SD card, a wiped folder); the seq floor file too
        unless ``keep_seq_floor``. What the hub did not have yet is lost with it."""
        self.rig.stop_agent(crash=crash)
        stored = {row.id for row in self.rig.timeline_rows()}
        with self.lock:
            for ev in self.events.values():
                if ev.id not in stored:
                    ev.excused = True
                    ev.unrecorded = ev.unrecorded or not keep_seq_floor
            self.file_epoch += 1
            # renumberings were of the lost file's events: a client id posted again now is new
            self.moved_to.clear()
            if not keep_seq_floor:
                # the device has no record of its seqs left: it may hand them out again
                self.handed.clear()
                self.max_handed = 0
        self.rig.lose_outbox(keep_seq_floor=keep_seq_floor)
        self.rig.start_agent()

    @precondition(lambda self: self.broker.proc is not None)
    @rule(kind=st.sampled_from(["last", "above", "near-max", "max", "huge", "negative", "junk"]))
    @logged
    def forged_ack(self, kind: str) -> None:
        """Another client publishes a retained ack on the device's ack topic."""
        last, _, _ = self.rig.agent_view()
        value: Any = {
            "last": last,
            "above": last + 1000,
            "near-max": SEQ_MAX - 3,
            "max": SEQ_MAX,
            "huge": 10**30,
            "negative": -5,
            "junk": "seven",
        }[kind]
        if isinstance(value, int) and value > self.rig.watermark():
            self.ack_forged = True
        self.rig.publish_retained(self.rig.ack_topic(), json.dumps({"seq": value}).encode())

    @precondition(lambda self: self.broker.proc is not None)
    @rule(back=st.integers(1, 20))
    @logged
    def stale_ack(self, back: int) -> None:
        """An old retained ack comes back (a lower watermark than the hub's)."""
        wm = max(0, self.rig.watermark() - back)
        self.rig.publish_retained(self.rig.ack_topic(), json.dumps({"seq": wm}).encode())

    @rule()
    @logged
    def settle(self) -> None:
        """Everything up: the queue must drain, and the timeline be complete."""
        self._settle_and_check()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def tasks_alive(self) -> None:
        """Neither the uplink nor the hub ends by itself; nothing goes unhandled in the loop."""
        assert self.rig.uplink_alive() is None, f"the uplink ended: {self.rig.uplink_alive()}"
        assert self.rig.hub_alive() is None, f"the hub ended: {self.rig.hub_alive()}"
        assert not self.rig.loop_errors, f"unhandled in the loop: {self.rig.loop_errors}"

    @invariant()
    def timeline_consistent(self) -> None:
        """Every stored event is one the agent accepted at a seq it gave it, or its own."""
        _, acked, _ = self.rig.agent_view()
        rows = self.rig.timeline_rows()
        wm = self.rig.watermark()
        with self.lock:
            for row in rows:
                self._check_row(row)
            forged = self.ack_forged
        if not forged:
            assert acked <= wm, f"the agent took an ack of {acked}, the hub's watermark is {wm}"

    def _check_row(self, row: TimelineRow) -> None:
        ev = self.events.get(row.id)
        if ev is None:
            assert row.type in LIFECYCLE_TYPES, (
                f"seq {row.seq} holds {row.id} ({row.type}), which no client was answered 201 for"
            )
            return
        assert row.seq in ev.seqs, (
            f"{row.id} is stored at seq {row.seq}; the agent gave it {sorted(ev.seqs)}"
        )
        assert row.data == ev.data, f"{row.id}: stored {row.data}, posted {ev.data}"

    # -- settling ----------------------------------------------------------------------------

    def _settle_and_check(self) -> None:
        if self.broker.proc is None:
            self.broker.start()
        if not self.rig.hub_up:
            self.rig.start_hub()
        self._wait_drained()
        # a refusal (507) must not outlive its cause: the queue is empty, so a POST is taken
        probe = self._event("scan", client_id=True)
        status, answer = self.rig.post(probe)
        assert status == 201, f"after draining, a POST got {status}: {answer}"
        self._record([probe], [answer])
        self._wait_drained()
        self._check_complete()

    def _wait_drained(self) -> None:
        deadline = time.monotonic() + PROGRESS_S
        while True:
            last, acked, depth = self.rig.agent_view()
            wm = self.rig.watermark()
            if depth == 0 and wm >= last and acked >= last:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no progress within {PROGRESS_S:.0f}s with broker and hub up: agent last"
                    f" seq {last}, acked {acked}, depth {depth}; hub watermark {wm}; missing"
                    f" {self._missing(wm, last)}; dead letters {self.rig.dead_letters()[-5:]}"
                )
            time.sleep(0.05)

    def _missing(self, wm: int, last: int) -> list[int]:
        have = {row.seq for row in self.rig.timeline_rows()}
        gaps = [s for s in range(wm + 1, last + 1) if s not in have]
        return gaps[:20]

    def _check_complete(self) -> None:
        rows = self.rig.timeline_rows()
        by_id: dict[str, list[TimelineRow]] = {}
        for row in rows:
            by_id.setdefault(row.id, []).append(row)
        accounted = self.rig.accounted()

        def covered(seqs: set[int]) -> bool:
            return any(lo <= s <= hi for s in seqs for lo, hi, _ in accounted)

        with self.lock:
            for ev in self.events.values():
                stored = by_id.get(ev.id, [])
                assert len(stored) <= 1, f"{ev.id} stored {len(stored)} times"
                if stored:
                    continue
                if not (ev.low or ev.excused or ev.forged_notice):
                    raise AssertionError(
                        f"kept event {ev.id} ({ev.type}, seqs {sorted(ev.seqs)}) accepted with"
                        f" 201 is not in the timeline; accounted {accounted[-8:]}"
                    )
                if ev.unrecorded:
                    continue
                assert covered(ev.seqs), (
                    f"{ev.id} ({ev.type}, seqs {sorted(ev.seqs)}) is missing and none of its"
                    f" seqs is accounted for at the hub: {accounted[-8:]}"
                )

    def teardown(self) -> None:
        """A final drain and check (unless a step already failed), then stop everything."""
        failing = sys.exc_info()[0] is not None
        if failing:
            print("failing run:", " ; ".join(self.trace))
        try:
            if not failing:
                self._settle_and_check()
        finally:
            try:
                self.rig.close()
            finally:
                self.broker.stop()
                shutil.rmtree(self.dir, ignore_errors=True)


SpineMachine.TestCase.settings = SETTINGS
TestSpine = SpineMachine.TestCase


def test_a_forged_ack_while_the_hub_is_offline_deletes_nothing() -> None:
    """A run the exploration found (0.4.4), replayed as it was: the agent published four
    events, the hub went down before it stored them, and a forged ack of the last seq deleted
    them (it failed three times in four before the fix; the hub's offline state now says that no
    hub sent the ack)."""
    machine = SpineMachine()
    failed = True
    try:
        machine.lose_outbox_file(crash=False, keep_seq_floor=True)
        machine.post_batch(client_ids=True, kinds=["gnss.fix", "gnss.fix", "gnss.fix", "pod"])
        machine.hub_down()
        machine.post_hostile(index=7513)
        machine.forged_ack(kind="last")
        machine.broker_down()
        machine.post_one(client_id=True, kind="gnss.fix")
        machine.settle()
        failed = False
    finally:
        if failed:
            machine.rig.close()
            machine.broker.stop()
            shutil.rmtree(machine.dir, ignore_errors=True)
        else:
            machine.teardown()  # settles once more and checks
