"""The audit sealer: adds committed audit rows to one RFC 9162 Merkle tree and signs checkpoints.

Appenders only INSERT (app/mechanisms/audit.py). The sealer, at most one at a time (a lease
on the one ``audit_seal_state`` row, and a row lock on it for each seal), takes
the rows committed since the last seal in id order, appends their leaf hashes
(app/mechanisms/merkle.py) as ``audit_leaves``, stores the perfect subtrees of every 8th
level (``audit_tree_nodes``) for proofs, and stores a checkpoint signed with
Ed25519 as a C2SP signed note (app/mechanisms/audit_keys.py).

**The commit horizon.** Row ids are allocated at INSERT but rows commit in any
order, so "every id above the last sealed one" would skip forever a row whose
transaction was still open. On PostgreSQL every row stores the id of the
transaction that wrote it (``txid``, default ``pg_current_xact_id()``). A seal
reads ``pg_current_snapshot()``: a transaction below its ``xmax`` and not in its
``xip`` list has ended, so its rows are visible now or never. The seal takes the
rows of transactions in ``[previous xmax, xmax)`` that are not in ``xip``, plus
those of transactions that were in ``xip`` at an earlier seal and have ended
since; the ones still in flight wait in ``pending_xids``. A transaction that
gets its id after the snapshot gets one at or above ``xmax``, so it falls in a
later range. Unlike ``xmin`` alone (the technique of outbox pollers), a long
transaction elsewhere in the cluster (a migration, another database's DDL) then
delays only its own rows. (PostgreSQL docs, "System Information Functions":
``pg_current_snapshot``, ``pg_snapshot_xip``.) SQLite has one writer at a time,
so ids are allocated in commit order and "ids above the last sealed one" is exact.

:func:`verify` re-derives every leaf from the rows and checks them against the
stored leaves, the stored tree against every signed checkpoint, the checkpoints'
signatures, an RFC 9162 consistency proof from the last verified checkpoint to
the newest, rows that should be sealed but are not, and the age of the unsealed tail.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from app.foundation.db import Database, utcnow
from app.foundation.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditLeaf,
    AuditSealState,
    AuditTreeNode,
)
from app.mechanisms.audit import event_leaf_data, verify_chain
from app.mechanisms.audit_keys import (
    SigningKey,
    checkpoint_text,
    parse_note,
    sign_note,
    verify_note,
)
from app.mechanisms.merkle import (
    HASH_SIZE,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_ranges,
    root_of,
    split_point,
    verify_consistency,
)

log = logging.getLogger(__name__)

STATE_ID = 1
NODE_LEVEL_STEP = 8  # store perfect subtrees of 256, 65536, ... leaves
DEFAULT_SEAL_LIMIT = 20_000  # rows per seal transaction; a backlog drains over several seals
VERIFY_CHUNK = 65_536

UNSEALED_AGE = Gauge(
    "erx_audit_unsealed_oldest_age_seconds",
    "Age of the oldest committed audit row not yet sealed (0 when none), as of the last seal.",
)
LAST_SEAL = Gauge(
    "erx_audit_last_seal_timestamp_seconds", "Unix time of the sealer's last successful seal."
)
TREE_SIZE = Gauge("erx_audit_tree_size", "Leaves in the audit Merkle tree after the last seal.")
VERIFY_FAILURES = Counter(
    "erx_audit_verify_failures_total", "Problems found by audit verify (one per reported line)."
)

# The leaf hash of app.mechanisms.audit.leaf_data, computed by PostgreSQL (verify reads no row into Python).
# concat_ws skips a NULL argument: a row without a list ends at client_addr (format 1), a row
# with one adds it, quoted as PostgreSQL writes a bigint[] as text (format 2).
LEAF_SQL = (
    "sha256('\\x00'::bytea || convert_to(concat_ws(',', "
    "CASE WHEN e.prescription_ids IS NULL THEN 'erx-audit-leaf/1' ELSE 'erx-audit-leaf/2' END, "
    "e.id, quote_nullable(e.actor), quote_nullable(e.role), quote_nullable(e.action), "
    "coalesce(e.prescription_id::text, 'NULL'), (e.occurred_at AT TIME ZONE 'UTC')::text, "
    "quote_nullable(e.request_id), quote_nullable(e.client_addr), "
    "quote_literal(e.prescription_ids::text)), 'UTF8'))"
)


def event_leaf_hash(event: Any) -> bytes:
    """The RFC 9162 leaf hash of an ``audit_events`` row (ORM object or row with its columns)."""
    return leaf_hash(event_leaf_data(event))


def default_holder() -> str:
    """This process's lease holder name: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _state(session: Session, *, lock: bool) -> AuditSealState:
    query = select(AuditSealState).where(AuditSealState.id == STATE_ID)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    found = session.scalars(query).first()
    if found is not None:
        return found
    found = AuditSealState(
        id=STATE_ID,
        horizon=0,
        upto=0,
        pending_xids="",
        last_event_id=0,
        tree_size=0,
        frontier=b"",
        drain_after=0,
    )
    session.add(found)
    session.flush()
    if lock and session.get_bind().dialect.name == "postgresql":
        session.refresh(found, with_for_update=True)
    return found


def acquire_lease(db: Database, *, holder: str, now: datetime, lease_s: float) -> bool:
    """Take or renew the sealer lease for ``lease_s`` seconds; True when ``holder`` has it.

    Another holder's lease is taken over only once it has expired (its process
    died or hung), so at most one sealer loop runs at a time.
    """
    with db.session() as session:
        state = _state(session, lock=True)
        if state.holder not in (None, holder) and state.lease_until and state.lease_until > now:
            return False
        state.holder, state.lease_until = holder, now + timedelta(seconds=lease_s)
        return True


def release_lease(db: Database, *, holder: str) -> None:
    """Give the lease up (on shutdown) so another sealer need not wait for it to expire."""
    with db.session() as session:
        session.execute(
            update(AuditSealState)
            .where(AuditSealState.id == STATE_ID, AuditSealState.holder == holder)
            .values(holder=None, lease_until=None)
        )


@dataclass(frozen=True)
class SealResult:
    """One seal: ``sealed`` rows added, ``tree_size`` after, ``checkpoint_id`` (None if none
    added), ``oldest_unsealed_s``: age in seconds of the oldest row left unsealed (0 if none)."""

    sealed: int
    tree_size: int
    checkpoint_id: int | None
    oldest_unsealed_s: float = 0.0


class StoredTree:
    """``MTH`` of any leaf range, from ``audit_leaves`` and the stored ``audit_tree_nodes``.

    A perfect subtree at a stored level is one lookup; any other is folded from at
    most 128 stored hashes one stored level below. Results are cached per instance.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._cache: dict[tuple[int, int], bytes] = {}
        self._blocks: dict[tuple[int, int], list[bytes]] = {}

    def _fetch(self, level: int, lo: int, hi: int) -> list[Any]:
        if level == 0:
            query = select(AuditLeaf.seq, AuditLeaf.leaf_hash).where(
                AuditLeaf.seq >= lo, AuditLeaf.seq < hi
            )
            return list(self.session.execute(query.order_by(AuditLeaf.seq)).all())
        query = select(AuditTreeNode.idx, AuditTreeNode.hash).where(
            AuditTreeNode.level == level, AuditTreeNode.idx >= lo, AuditTreeNode.idx < hi
        )
        return list(self.session.execute(query.order_by(AuditTreeNode.idx)).all())

    def _block(self, level: int, number: int) -> list[bytes]:
        """The stored hashes of one aligned block of 256 at ``level``, up to the first gap.

        Proofs for nearby leaves share blocks, so an export reads each block once.
        """
        key = (level, number)
        if key not in self._blocks:
            span = 1 << NODE_LEVEL_STEP
            out: list[bytes] = []
            for position, value in self._fetch(level, number * span, (number + 1) * span):
                if position != number * span + len(out):
                    break
                out.append(bytes(value))
            self._blocks[key] = out
        return self._blocks[key]

    def remember(self, level: int, idx: int, value: bytes) -> None:
        """Cache the hash of the perfect subtree ``idx`` at ``level`` (just computed and stored)."""
        self._cache[(level, idx)] = value

    def level_hashes(self, level: int, lo: int, hi: int) -> list[bytes]:
        """The hashes of nodes ``lo`` to ``hi - 1`` (exclusive) at ``level``, in order."""
        span = 1 << NODE_LEVEL_STEP
        if hi - lo <= span and lo // span == (hi - 1) // span:
            block = self._block(level, lo // span)
            got = block[lo % span : lo % span + (hi - lo)]
            if len(got) == hi - lo:
                return got
            self._blocks.pop((level, lo // span), None)  # stale or short: read again below
        rows = self._fetch(level, lo, hi)
        if len(rows) == hi - lo:
            return [bytes(r[1]) for r in rows]
        if level == 0:
            raise LookupError(f"audit leaves {lo}..{hi - 1} are missing")
        # A stored level with a gap (e.g. rows seeded without nodes): fold from the level below.
        return [self.perfect(level, i) for i in range(lo, hi)]

    def perfect(self, level: int, idx: int) -> bytes:
        """The root of the ``2**level`` leaves from ``idx * 2**level``."""
        key = (level, idx)
        if key in self._cache:
            return self._cache[key]
        base = level - level % NODE_LEVEL_STEP
        if base == level and level > 0:
            span = 1 << NODE_LEVEL_STEP
            block = self._block(level, idx // span)
            if idx % span < len(block):
                self._cache[key] = block[idx % span]
                return self._cache[key]
            base = level - NODE_LEVEL_STEP
        span = level - base
        value = root_of(self.level_hashes(base, idx << span, (idx + 1) << span))
        self._cache[key] = value
        return value

    def subtree(self, lo: int, hi: int) -> bytes:
        """``MTH(D[lo:hi])`` per RFC 9162 2.1.1 (``lo`` aligned as proofs ask)."""
        size = hi - lo
        if size <= 0:
            raise ValueError("empty subtree")
        if size & (size - 1) == 0 and lo % size == 0:
            return self.perfect(size.bit_length() - 1, lo // size)
        k = split_point(size)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def frontier(self, size: int) -> Frontier:
        """The frontier at ``size`` (its perfect-subtree roots), from stored hashes."""
        return Frontier(size, [self.subtree(lo, hi) for lo, hi in perfect_ranges(size)])


@dataclass(frozen=True)
class _Snapshot:
    """One PostgreSQL snapshot being sealed: rows with ``lo <= txid < hi`` outside ``exclude``
    (in flight then), plus rows of ``include`` (in flight at an earlier seal, ended since);
    ``legacy``: also rows from before the sealer (NULL ``txid``). ``xmin`` and ``pending``
    become the state's ``horizon`` and ``pending_xids`` once the snapshot is sealed."""

    lo: int
    hi: int
    exclude: tuple[int, ...]
    include: tuple[int, ...]
    legacy: bool
    xmin: int
    pending: tuple[int, ...]

    def condition(self) -> Any:
        """The rows this snapshot seals, as a SQL expression."""
        txid = AuditEvent.txid
        cond = (txid >= self.lo) & (txid < self.hi)
        if self.exclude:
            cond = cond & txid.not_in(self.exclude)
        if self.include:
            cond = cond | txid.in_(self.include)
        if self.legacy:
            cond = cond | txid.is_(None)
        return cond


def _xids(value: str) -> tuple[int, ...]:
    return tuple(int(x) for x in value.split(",") if x)


def _take_snapshot(session: Session, state: AuditSealState) -> _Snapshot:
    """Read the commit horizon: a transaction below xmax and not in xip has ended, so its
    rows are visible now or never (PostgreSQL docs, pg_current_snapshot / pg_snapshot_xip)."""
    row = session.execute(
        text(
            "SELECT (pg_snapshot_xmin(s)::text)::bigint, (pg_snapshot_xmax(s)::text)::bigint, "
            "ARRAY(SELECT (x::text)::bigint FROM pg_snapshot_xip(s) AS x) "
            "FROM pg_current_snapshot() AS s"
        )
    ).one()
    xmin, xmax, xip = int(row[0]), int(row[1]), {int(x) for x in row[2]}
    pending = set(_xids(state.pending_xids))
    return _Snapshot(
        lo=state.upto,
        hi=xmax,
        exclude=tuple(sorted(x for x in xip if state.upto <= x < xmax)),
        include=tuple(sorted(x for x in pending if x not in xip)),
        legacy=state.upto == 0,
        xmin=xmin,
        pending=tuple(sorted((pending & xip) | {x for x in xip if state.upto <= x < xmax})),
    )


def _snapshot_of(state: AuditSealState) -> _Snapshot | None:
    if not state.drain:
        return None
    data = json.loads(state.drain)
    return _Snapshot(
        lo=data["lo"],
        hi=data["hi"],
        exclude=tuple(data["exclude"]),
        include=tuple(data["include"]),
        legacy=data["legacy"],
        xmin=data["xmin"],
        pending=tuple(data["pending"]),
    )


_COLUMNS = (
    AuditEvent.id,
    AuditEvent.actor,
    AuditEvent.role,
    AuditEvent.action,
    AuditEvent.prescription_id,
    AuditEvent.occurred_at,
    AuditEvent.request_id,
    AuditEvent.client_addr,
    AuditEvent.prescription_ids,
)


def _new_rows(session: Session, state: AuditSealState, *, limit: int) -> list[Any]:
    """The next rows to seal, in id order; moves the state's horizon when a snapshot is done."""
    if session.get_bind().dialect.name != "postgresql":
        # One writer at a time: ids are allocated in commit order, so the next ids are exact.
        query = select(*_COLUMNS).where(AuditEvent.id > state.last_event_id)
        return list(session.execute(query.order_by(AuditEvent.id).limit(limit)).all())
    snap = _snapshot_of(state)
    if snap is None:
        snap = _take_snapshot(session, state)
        state.drain, state.drain_after = json.dumps(dataclasses.asdict(snap)), 0
    query = select(*_COLUMNS).where(snap.condition(), AuditEvent.id > state.drain_after)
    rows = list(session.execute(query.order_by(AuditEvent.id).limit(limit)).all())
    if len(rows) < limit:
        state.horizon, state.upto, state.pending_xids = (
            snap.xmin,
            snap.hi,
            ",".join(map(str, snap.pending)),
        )
        state.drain, state.drain_after = None, 0
    else:
        state.drain_after = rows[-1].id
    return rows


def _store_nodes(session: Session, tree: StoredTree, old_size: int, new_size: int) -> None:
    """Store the perfect subtrees at every 8th level that the new leaves completed."""
    level = NODE_LEVEL_STEP
    while (1 << level) <= new_size:
        first, last = old_size >> level, new_size >> level
        if last > first:
            span = NODE_LEVEL_STEP
            below = level - span
            values = []
            for idx in range(first, last):
                children = tree.level_hashes(below, idx << span, (idx + 1) << span)
                value = root_of(children)
                tree.remember(level, idx, value)
                values.append({"level": level, "idx": idx, "hash": value})
            session.execute(insert(AuditTreeNode), values)
        level += NODE_LEVEL_STEP


def _unsealed_condition(state: AuditSealState) -> Any:
    """The rows not yet sealed, as a SQL expression (PostgreSQL)."""
    snap = _snapshot_of(state)
    if snap is not None:
        return (
            (snap.condition() & (AuditEvent.id > state.drain_after))
            | (AuditEvent.txid >= snap.hi)
            | (AuditEvent.txid.in_(snap.pending))
        )
    cond = AuditEvent.txid >= state.upto
    pending = _xids(state.pending_xids)
    if pending:
        cond = cond | AuditEvent.txid.in_(pending)
    if state.upto == 0:
        cond = cond | AuditEvent.txid.is_(None)
    return cond


def _oldest_unsealed(session: Session, state: AuditSealState, now: datetime) -> float:
    if session.get_bind().dialect.name == "postgresql":
        cond = _unsealed_condition(state)
    else:
        cond = AuditEvent.id > state.last_event_id
    oldest = session.scalar(select(func.min(AuditEvent.occurred_at)).where(cond))
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def seal_once(
    db: Database,
    keys: Sequence[SigningKey],
    *,
    origin: str,
    now: Callable[[], datetime] = utcnow,
    limit: int = DEFAULT_SEAL_LIMIT,
) -> SealResult:
    """Seal the rows committed since the last seal (at most ``limit``) in one transaction.

    Appends their leaves, stores completed tree nodes and, when any row was added,
    a checkpoint signed with ``keys[0]`` whose origin line is ``origin``. Safe to
    call from several processes: the state row's lock makes them take turns.
    Updates the ``erx_audit_*`` gauges. Returns a :class:`SealResult`.
    """
    with db.session() as session:
        state = _state(session, lock=True)
        rows = _new_rows(session, state, limit=limit)
        old_size = state.tree_size
        frontier = Frontier.from_bytes(old_size, bytes(state.frontier))
        leaves = []
        for offset, row in enumerate(rows):
            h = event_leaf_hash(row)
            frontier.append(h)
            leaves.append({"seq": old_size + offset, "event_id": row.id, "leaf_hash": h})
        checkpoint_id = None
        if leaves:
            session.execute(insert(AuditLeaf), leaves)
            _store_nodes(session, StoredTree(session), old_size, frontier.size)
            at = now()
            root = frontier.root()
            key = keys[0]
            note = sign_note(
                checkpoint_text(origin=origin, size=frontier.size, root=root, at=at), key
            )
            checkpoint_id = session.execute(
                insert(AuditCheckpoint)
                .values(
                    tree_size=frontier.size,
                    root_hash=root,
                    signed_at=at,
                    key_id=key.key_id_hex,
                    note=note,
                )
                .returning(AuditCheckpoint.id)
            ).scalar_one()
            state.tree_size, state.frontier, state.sealed_at = (
                frontier.size,
                frontier.to_bytes(),
                at,
            )
            state.last_event_id = max(state.last_event_id, rows[-1].id)
        oldest = _oldest_unsealed(session, state, now())
        size = state.tree_size
    UNSEALED_AGE.set(oldest)
    TREE_SIZE.set(size)
    LAST_SEAL.set(time.time())
    return SealResult(
        sealed=len(leaves), tree_size=size, checkpoint_id=checkpoint_id, oldest_unsealed_s=oldest
    )


def seal_loop(
    db: Database,
    keys: Sequence[SigningKey],
    *,
    origin: str,
    interval_s: float,
    lease_s: float = 30.0,
    holder: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = utcnow,
    verify_every_s: float = 300.0,
    max_unsealed_age_s: float = 60.0,
) -> int:
    """Seal every ``interval_s`` seconds while holding the lease; return the rows sealed.

    Without the lease it waits and retries (another sealer is running). A full
    batch seals again at once (a backlog drains without waiting). Every
    ``verify_every_s`` seconds the lease holder also runs an incremental
    :func:`verify` (0 = never), logging each problem and counting it in
    ``erx_audit_verify_failures_total`` for the alert. Database errors are
    logged by type and retried after ``interval_s``.
    """
    who = holder or default_holder()
    total = 0
    renew_at = 0.0
    verify_at = time.monotonic() + verify_every_s
    try:
        while not should_stop():
            try:
                if time.monotonic() >= renew_at:
                    if not acquire_lease(db, holder=who, now=now(), lease_s=lease_s):
                        sleep(interval_s)
                        continue
                    renew_at = time.monotonic() + lease_s / 3
                result = seal_once(db, keys, origin=origin, now=now)
                if verify_every_s and time.monotonic() >= verify_at:
                    verify_at = time.monotonic() + verify_every_s
                    report = verify(db, keys, max_unsealed_age_s=max_unsealed_age_s, now=now)
                    for line in report.problems:
                        log.error("audit verify: %s", line)
            except Exception as exc:  # noqa: BLE001 - keep sealing after a database hiccup
                log.warning("audit seal failed: %s", type(exc).__name__)
                renew_at = 0.0
                sleep(interval_s)
                continue
            total += result.sealed
            if result.sealed < DEFAULT_SEAL_LIMIT:
                sleep(interval_s)
    finally:
        try:
            release_lease(db, holder=who)
        except Exception as exc:  # noqa: BLE001 - shutting down; the lease expires anyway
            log.info("audit sealer lease not released: %s", type(exc).__name__)
    return total


# -- verify --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify`: ``problems`` (one line each, ids only, no row content),
    ``leaves_checked``, ``checkpoints_checked``, ``tree_size`` and ``from_size`` (where the
    check started: 0 for a full check)."""

    problems: tuple[str, ...]
    leaves_checked: int
    checkpoints_checked: int
    tree_size: int
    from_size: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


@dataclass
class _Leaves:
    blob: bytes = b""
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _chunk_postgres(session: Session, lo: int, hi: int) -> _Leaves:
    row = session.execute(
        text(
            "SELECT string_agg(l.leaf_hash, ''::bytea ORDER BY l.seq), "
            "array_agg(l.event_id::text || ' (leaf ' || l.seq::text || ')' ORDER BY l.seq) "
            "  FILTER (WHERE e.id IS NULL), "
            "array_agg(l.event_id::text || ' (leaf ' || l.seq::text || ')' ORDER BY l.seq) "
            f"  FILTER (WHERE e.id IS NOT NULL AND {LEAF_SQL} <> l.leaf_hash) "
            "FROM audit_leaves l LEFT JOIN audit_events e ON e.id = l.event_id "
            "WHERE l.seq >= :lo AND l.seq < :hi"
        ),
        {"lo": lo, "hi": hi},
    ).one()
    return _Leaves(bytes(row[0] or b""), list(row[2] or []), list(row[1] or []))


def _chunk_python(session: Session, lo: int, hi: int) -> _Leaves:
    rows = session.execute(
        select(AuditLeaf.seq, AuditLeaf.event_id, AuditLeaf.leaf_hash, AuditEvent)
        .outerjoin(AuditEvent, AuditEvent.id == AuditLeaf.event_id)
        .where(AuditLeaf.seq >= lo, AuditLeaf.seq < hi)
        .order_by(AuditLeaf.seq)
    ).all()
    out = _Leaves(b"".join(bytes(r[2]) for r in rows))
    for seq, event_id, stored, event in rows:
        if event is None:
            out.removed.append(f"{event_id} (leaf {seq})")
        elif event_leaf_hash(event) != bytes(stored):
            out.changed.append(f"{event_id} (leaf {seq})")
    session.expunge_all()
    return out


def _leaf_chunks(
    db: Database, session: Session, start: int, end: int, *, workers: int
) -> Iterator[_Leaves]:
    """The leaf chunks from ``start`` to ``end`` in order: on PostgreSQL fetched ``workers`` at a
    time ahead on their own connections; on SQLite in ``session`` (one connection writes at a time,
    and every transaction there takes the write lock)."""
    if not db.is_postgres:
        for lo in range(start, end, VERIFY_CHUNK):
            yield _chunk_python(session, lo, min(lo + VERIFY_CHUNK, end))
        return
    fetch = _chunk_postgres

    def one(lo: int) -> _Leaves:
        with db.session() as own:
            # A plan that hashes the whole table for each chunk would read it once per chunk;
            # LEAF_SQL writes times in DateStyle ISO.
            own.execute(text("SET LOCAL enable_hashjoin = off"))
            own.execute(text("SET LOCAL DateStyle = 'ISO, MDY'"))
            return fetch(own, lo, min(lo + VERIFY_CHUNK, end))

    starts = range(start, end, VERIFY_CHUNK)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future[_Leaves]] = deque()
        for lo in starts:
            pending.append(pool.submit(one, lo))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _unsealed_but_due(session: Session, state: AuditSealState, *, from_seq: int) -> list[int]:
    """Rows the sealer has passed but that are not in the tree: inserted behind its back.

    From leaf ``from_seq`` on (an incremental verify): only rows with an id at least
    the lowest sealed there, so the check costs what was appended since; 0 checks all.
    """
    sealed = select(AuditLeaf.event_id).where(AuditLeaf.event_id == AuditEvent.id).exists()
    lowest = 0
    if from_seq > 0:
        # OFFSET 0 keeps min() from walking the event_id index of every leaf.
        since = select(AuditLeaf.event_id).where(AuditLeaf.seq >= from_seq - 1).offset(0).subquery()
        lowest = session.scalar(select(func.min(since.c.event_id))) or 0
    if session.get_bind().dialect.name == "postgresql":
        if state.upto == 0:
            return []
        passed = (AuditEvent.txid < state.horizon) | AuditEvent.txid.is_(None)
    else:
        passed = AuditEvent.id <= state.last_event_id
    query = select(AuditEvent.id).where(passed, ~sealed, AuditEvent.id >= lowest)
    return list(session.scalars(query.order_by(AuditEvent.id).limit(20)))


def verify(
    db: Database,
    keys: Sequence[SigningKey],
    *,
    full: bool = False,
    max_unsealed_age_s: float = 60.0,
    now: Callable[[], datetime] = utcnow,
    record_mark: bool = True,
    workers: int = 2,
) -> VerifyReport:
    """Check the sealed audit log; return every problem found, one line each.

    From the last checkpoint a previous verify found sound (its root must still
    match the stored tree), or from the first leaf with ``full``. Reports: a row
    changed or removed after it was sealed; a row the sealer passed that is not
    in the tree (inserted behind its back); a checkpoint whose signature fails
    against ``keys``; a checkpoint whose root is not the stored tree at its size,
    or that does not extend the previous one (RFC 9162 consistency proof: a fork);
    an unsealed row older than ``max_unsealed_age_s`` seconds; with ``full``, a
    broken link in the hash chain of rows written before the sealer. When sound
    and ``record_mark``, stores the newest checkpoint as the next start.
    Increments ``erx_audit_verify_failures_total`` once per problem. On
    PostgreSQL the database recomputes the leaf hashes, ``workers`` chunks at a
    time on as many connections, while this process folds the tree.
    """
    problems: list[str] = []
    at = now()
    with db.session() as session:
        state = _state(session, lock=False)
        tree = StoredTree(session)
        mark = None
        if not full and state.verified_checkpoint_id is not None:
            mark = session.get(AuditCheckpoint, state.verified_checkpoint_id)
        query = select(AuditCheckpoint).order_by(AuditCheckpoint.id)
        if mark is not None:
            query = query.where(AuditCheckpoint.id >= mark.id)
        checkpoints = list(session.scalars(query))
        # Positions are 0..n-1: the highest is an index lookup, where count(*) reads them all.
        last_seq = session.scalar(select(func.max(AuditLeaf.seq)))
        leaves_total = 0 if last_seq is None else last_seq + 1

        # Signatures first: a checkpoint nobody we trust signed proves nothing.
        trusted = []
        for cp in checkpoints:
            try:
                parsed = verify_note(cp.note, tuple(keys))
            except ValueError as exc:
                problems.append(f"checkpoint {cp.id}: malformed note ({exc})")
                continue
            if parsed is None:
                problems.append(
                    f"checkpoint {cp.id}: signature does not verify with any audit public key"
                )
                continue
            if parsed.size != cp.tree_size or parsed.root != bytes(cp.root_hash):
                problems.append(
                    f"checkpoint {cp.id}: stored size or root differs from its signed note"
                )
                continue
            trusted.append(cp)

        start = 0
        frontier = Frontier()
        if mark is not None and trusted and trusted[0].id == mark.id:
            try:
                frontier = tree.frontier(mark.tree_size)
            except LookupError:
                frontier = Frontier(0, [])
            if frontier.size == mark.tree_size and frontier.root() == bytes(mark.root_hash):
                start = mark.tree_size
            else:
                problems.append(
                    f"checkpoint {mark.id}: the stored tree no longer matches "
                    "this verified checkpoint"
                )
                frontier = Frontier()

        # Every leaf from start: the row behind it unchanged, and the tree at each checkpoint size.
        due = sorted(
            (cp for cp in trusted if cp.tree_size > start), key=lambda c: (c.tree_size, c.id)
        )
        due_sizes = [cp.tree_size for cp in due]
        due_at = 0
        chunks = _leaf_chunks(db, session, start, leaves_total, workers=workers)
        seq = start
        while seq < leaves_total or due_at < len(due):
            if seq >= leaves_total:
                for cp in due[due_at:]:
                    problems.append(
                        f"checkpoint {cp.id}: claims {cp.tree_size} leaves, "
                        f"only {leaves_total} are stored"
                    )
                break
            hi = min(seq + VERIFY_CHUNK, leaves_total)
            chunk = next(chunks)
            problems += [f"audit row {x} was changed after it was sealed" for x in chunk.changed]
            problems += [f"audit row {x} was removed after it was sealed" for x in chunk.removed]
            blob = chunk.blob
            if len(blob) != (hi - seq) * HASH_SIZE:
                problems.append(f"audit leaves {seq}..{hi - 1}: positions are missing")
                break
            leaves = [blob[o : o + HASH_SIZE] for o in range(0, len(blob), HASH_SIZE)]
            done = 0
            while done < len(leaves):
                # Up to the next checkpoint's size inside this chunk, then compare its root.
                stop = len(leaves)
                if due_at < len(due):
                    stop = min(stop, due_sizes[due_at] - frontier.size + done)
                frontier.extend(leaves[done:stop])
                done = stop
                while due_at < len(due) and due_sizes[due_at] == frontier.size:
                    cp = due[due_at]
                    if frontier.root() != bytes(cp.root_hash):
                        problems.append(
                            f"checkpoint {cp.id} (size {cp.tree_size}): root is not the "
                            "tree of the sealed rows (a fork, or leaves rewritten)"
                        )
                    due_at += 1
            seq = hi

        # The newest checkpoint extends the oldest one checked (RFC 9162 2.1.4).
        if len(trusted) >= 2 and trusted[0].tree_size > 0:
            first, last = trusted[0], trusted[-1]
            try:
                proof = consistency_proof(first.tree_size, last.tree_size, tree.subtree)
                consistent = verify_consistency(
                    first.tree_size,
                    last.tree_size,
                    bytes(first.root_hash),
                    bytes(last.root_hash),
                    proof,
                )
            except (LookupError, ValueError):
                consistent = False
            if not consistent:
                problems.append(
                    f"checkpoint {last.id} does not extend checkpoint {first.id}: "
                    "consistency proof fails"
                )
        for cp_prev, cp in zip(trusted, trusted[1:], strict=False):
            if cp.tree_size < cp_prev.tree_size:
                problems.append(
                    f"checkpoint {cp.id} is smaller than checkpoint {cp_prev.id}: the log shrank"
                )

        for event_id in _unsealed_but_due(session, state, from_seq=start):
            problems.append(
                f"audit row {event_id} is not in the sealed tree but the sealer passed it"
            )
        age = _oldest_unsealed(session, state, at)
        if age > max_unsealed_age_s:
            problems.append(
                f"unsealed audit rows: the oldest is {age:.0f} s old "
                f"(limit {max_unsealed_age_s:.0f} s)"
            )

    if full:
        chain = verify_chain(db)
        if not chain.ok:
            problems.append(
                f"pre-sealer hash chain broken at row {chain.first_bad_id}: {chain.reason}"
            )
    if problems:
        VERIFY_FAILURES.inc(len(problems))
    elif record_mark and trusted:
        with db.session() as session:
            session.execute(
                update(AuditSealState)
                .where(AuditSealState.id == STATE_ID)
                .values(verified_checkpoint_id=trusted[-1].id, verified_at=at)
            )
    return VerifyReport(
        problems=tuple(problems),
        leaves_checked=max(0, leaves_total - start),
        checkpoints_checked=len(checkpoints),
        tree_size=leaves_total,
        from_size=start,
    )


# -- proofs for exports --------------------------------------------------------------


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    """The newest checkpoint (highest id), or None before the first seal."""
    return session.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
    ).first()


def leaf_positions(session: Session, event_ids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
    """``{event id: (leaf index, leaf hash)}`` for the sealed ones among ``event_ids``."""
    if not event_ids:
        return {}
    rows = session.execute(
        select(AuditLeaf.event_id, AuditLeaf.seq, AuditLeaf.leaf_hash).where(
            AuditLeaf.event_id.in_(event_ids)
        )
    ).all()
    return {r[0]: (r[1], bytes(r[2])) for r in rows}


def prove_inclusion(
    session: Session, index: int, size: int, *, tree: StoredTree | None = None
) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the stored tree of ``size`` leaves.

    Pass one ``tree`` for several proofs: the subtrees they share are read once.
    """
    return inclusion_proof(index, size, (tree or StoredTree(session)).subtree)


def parse_checkpoint_note(note: str) -> tuple[int, bytes]:
    """``(size, root)`` of a stored note; raises ValueError when malformed."""
    parsed = parse_note(note)
    return parsed.size, parsed.root
