"""Durable stores: SQL shared by the embedded SQLite file and the shared PostgreSQL database.

The embedded store is one SQLite file per task hub, WAL, one writer thread.

Every change an orchestration episode makes (its new history, the messages it consumed, the work
and messages it sends) is one job; the writer thread runs jobs that queue up together in one
transaction (group commit), so a state transition is all-or-nothing and the disk sees few
commits under load. The file carries an application id and a metadata row naming its task hub,
so a foreign or corrupt file is refused with its path instead of being overwritten.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

APPLICATION_ID = 0x46504446  # "FPDF": marks the file as a funcplane durable store
SCHEMA_VERSION = 1
BATCH_LIMIT = 512  # most jobs one transaction takes

Result = TypeVar("Result")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances(
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    parent TEXT,
    history TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_created ON instances(created);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    visible_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_instance ON messages(instance_id, id);
CREATE INDEX IF NOT EXISTS messages_visible ON messages(visible_at);
CREATE TABLE IF NOT EXISTS work(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    body TEXT NOT NULL,
    owner TEXT,
    expires REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entities(
    entity_id TEXT PRIMARY KEY,
    state TEXT,
    updated REAL NOT NULL
);
"""

INSTANCE_COLUMNS = ("instance_id", "name", "execution_id", "status", "input", "output", "custom_status",
                    "created", "updated", "parent", "history", "state")
# Upserts in the SQL both SQLite (3.24+) and PostgreSQL speak.
_UPSERT_INSTANCE = (f"INSERT INTO instances VALUES ({','.join('?' * len(INSTANCE_COLUMNS))}) "
                    "ON CONFLICT (instance_id) DO UPDATE SET "
                    + ", ".join(f"{c} = excluded.{c}" for c in INSTANCE_COLUMNS[1:]))
# Every column but the history and the engine's state, which stand in as empty (status answers).
_SUMMARY_COLUMNS = ", ".join(INSTANCE_COLUMNS[:-2]) + ", '[]', '{}'"
_UPSERT_ENTITY = ("INSERT INTO entities VALUES (?,?,?) ON CONFLICT (entity_id) DO UPDATE SET "
                  "state = excluded.state, updated = excluded.updated")


class DurableStoreError(RuntimeError):
    """The store file cannot be used; the message names the file and the fix."""


class LeaseLost(DurableStoreError):
    """Another host holds the instance now (shared stores); this host's episode must not commit."""


@dataclass
class Message:
    instance_id: str
    body: dict[str, Any]
    visible_at: float = 0.0
    id: int = 0


@dataclass
class WorkItem:
    instance_id: str
    body: dict[str, Any]
    id: int = 0


@dataclass
class InstanceRow:
    instance_id: str
    name: str
    execution_id: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created: float
    updated: float
    parent: dict[str, Any] | None
    history: list[dict[str, Any]]
    state: dict[str, Any]
    # Each history event's stored JSON text, kept beside `history` by the engine so that a commit
    # does not encode the whole history again; used only while it has one text per event.
    encoded: list[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> InstanceRow:
        values = dict(zip(INSTANCE_COLUMNS, row))
        values["parent"] = json.loads(values["parent"]) if values["parent"] else None
        values["history"] = json.loads(values["history"])
        values["state"] = json.loads(values["state"])
        return cls(**values)

    def to_sql(self) -> tuple[Any, ...]:
        encoded = self.encoded
        history = ("[" + ",".join(encoded) + "]" if encoded is not None and len(encoded) == len(self.history)
                   else json.dumps(self.history, separators=(",", ":")))
        return (self.instance_id, self.name, self.execution_id, self.status, self.input, self.output,
                self.custom_status, self.created, self.updated,
                json.dumps(self.parent) if self.parent else None,
                history, json.dumps(self.state, separators=(",", ":")))


@dataclass
class Changes:
    """What one state transition writes, applied atomically."""

    instances: list[InstanceRow] = field(default_factory=list)
    consumed_messages: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    work: list[WorkItem] = field(default_factory=list)
    work_owner: tuple[str, float] | None = None  # shared stores: (owner, lease expiry) of new work
    finished_work: list[int] = field(default_factory=list)
    entity_states: dict[str, str | None] = field(default_factory=dict)
    dropped_entities: list[str] = field(default_factory=list)
    drop_messages_of: list[str] = field(default_factory=list)  # instances whose pending messages go
    fence: Callable[[Any], None] | None = None  # shared stores: raises unless this host holds the instance

    def apply(self, conn: Any, now: float) -> None:
        """Write the changes through `conn` (sqlite3, or the PostgreSQL adapter: same SQL)."""
        if self.fence is not None:
            self.fence(conn)
        for instance_id in self.drop_messages_of:
            conn.execute("DELETE FROM messages WHERE instance_id = ?", (instance_id,))
        if self.consumed_messages:
            conn.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in self.consumed_messages])
        if self.finished_work:
            conn.executemany("DELETE FROM work WHERE id = ?", [(i,) for i in self.finished_work])
        if self.instances:
            conn.executemany(_UPSERT_INSTANCE, [row.to_sql() for row in self.instances])
        for message in self.messages:
            message.id = int(conn.execute(
                "INSERT INTO messages(instance_id, visible_at, body) VALUES (?,?,?) RETURNING id",
                (message.instance_id, message.visible_at, json.dumps(message.body))).fetchone()[0])
        owner, expires = self.work_owner or (None, 0.0)
        for item in self.work:
            item.id = int(conn.execute(
                "INSERT INTO work(instance_id, body, owner, expires) VALUES (?,?,?,?) RETURNING id",
                (item.instance_id, json.dumps(item.body), owner, expires)).fetchone()[0])
        for entity_id, state in self.entity_states.items():
            conn.execute(_UPSERT_ENTITY, (entity_id, state, now))
        if self.dropped_entities:
            conn.executemany("DELETE FROM entities WHERE entity_id = ?", [(e,) for e in self.dropped_entities])


@dataclass
class _Job:
    run: Callable[[Any], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class SqlStore:
    """A task hub in SQL. All access goes through one thread and one connection, so the SQL is
    the same for every store; a subclass connects and checks the schema."""

    kind = ""
    shared = False  # many hosts on one hub: work and instances are leased
    _begin = "BEGIN"
    _db_errors: tuple[type[Exception], ...] = ()

    def __init__(self, where: Any, hub: str) -> None:
        self.path = where
        self.hub = hub
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def open(self) -> None:
        raise NotImplementedError

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._serve, name=f"durable-store-{self.hub}", daemon=True)
        self._thread.start()

    def _check_meta(self, meta: dict[str, str], conn: Any) -> None:
        """First use writes the schema version and hub; later uses must match them."""
        if not meta:
            conn.executemany("INSERT INTO meta VALUES (?,?)",
                             [("schemaVersion", str(SCHEMA_VERSION)), ("taskHub", self.hub)])
            return
        if meta.get("schemaVersion") != str(SCHEMA_VERSION):
            raise DurableStoreError(
                f"durable store {self.path} has schema version {meta.get('schemaVersion')!r}; this host reads "
                f"version {SCHEMA_VERSION}")
        if meta.get("taskHub") != self.hub:
            raise DurableStoreError(
                f"durable store {self.path} holds task hub {meta.get('taskHub')!r}, not {self.hub!r}; "
                "each hub has its own store - check extensions.durableTask.hubName")

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- the store's thread -------------------------------------------------------------------

    def _serve(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < BATCH_LIMIT:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            outcomes: list[tuple[_Job, bool, Any]] = []
            try:
                conn.execute(self._begin)
                for index, job in enumerate(batch):
                    conn.execute(f"SAVEPOINT job{index}")
                    try:
                        outcomes.append((job, True, job.run(conn)))
                        conn.execute(f"RELEASE job{index}")
                    except Exception as error:  # noqa: BLE001 - handed to the awaiting coroutine
                        conn.execute(f"ROLLBACK TO job{index}")
                        conn.execute(f"RELEASE job{index}")
                        outcomes.append((job, False, error))
                conn.execute("COMMIT")
            except self._db_errors as error:
                try:
                    conn.execute("ROLLBACK")
                except self._db_errors:
                    pass
                outcomes = [(job, False, DurableStoreError(f"durable store {self.path}: {error}")) for job in batch]
            for job, ok, value in outcomes:
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
            if stop:
                return

    async def run(self, work: Callable[[Any], Result]) -> Result:
        """Run `work(conn)` inside a transaction on the store's thread."""
        if self._thread is None:
            raise DurableStoreError(f"durable store {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._jobs.put(_Job(work, future, loop))
        return await future

    # ---- operations -------------------------------------------------------------------------

    async def apply(self, changes: Changes, now: float) -> None:
        await self.run(lambda conn: changes.apply(conn, now))

    async def instance(self, instance_id: str, *, history: bool = True) -> InstanceRow | None:
        """An instance's row; with history=False its history and engine state are left out (empty),
        which is all a status answer needs and saves decoding a long history on every poll."""
        columns = "*" if history else _SUMMARY_COLUMNS

        def read(conn: Any) -> InstanceRow | None:
            row = conn.execute(f"SELECT {columns} FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
            return InstanceRow.from_sql(row) if row else None
        return await self.run(read)

    async def episode_input(self, instance_id: str, now: float, limit: int, known: InstanceRow | None = None,
                            ) -> tuple[InstanceRow | None, list[Message]]:
        """An instance's row and visible messages. `known` is the row as this host last committed
        it: while the store still holds that version (same execution and update time), it is
        returned as is instead of decoding the history again."""
        def read(conn: Any) -> tuple[InstanceRow | None, list[Message]]:
            row: Any = None
            if known is not None:
                current = conn.execute("SELECT execution_id, updated FROM instances WHERE instance_id = ?",
                                       (instance_id,)).fetchone()
                if current is not None and current[0] == known.execution_id and current[1] == known.updated:
                    row = known
            if row is None:
                found = conn.execute("SELECT * FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
                row = InstanceRow.from_sql(found) if found else None
            messages = [
                Message(instance_id, json.loads(body), visible_at, message_id)
                for message_id, visible_at, body in conn.execute(
                    "SELECT id, visible_at, body FROM messages WHERE instance_id = ? AND visible_at <= ? "
                    "ORDER BY id LIMIT ?", (instance_id, now, limit))
            ]
            return row, messages
        return await self.run(read)

    async def entity_input(self, entity_id: str, limit: int) -> tuple[str | None, bool, list[Message]]:
        def read(conn: Any) -> tuple[str | None, bool, list[Message]]:
            row = conn.execute("SELECT state FROM entities WHERE entity_id = ?", (entity_id,)).fetchone()
            messages = [
                Message(entity_id, json.loads(body), visible_at, message_id)
                for message_id, visible_at, body in conn.execute(
                    "SELECT id, visible_at, body FROM messages WHERE instance_id = ? AND visible_at <= ? "
                    "ORDER BY id LIMIT ?", (entity_id, float("inf"), limit))
            ]
            return (row[0] if row else None), row is not None, messages
        return await self.run(read)

    async def entity_state(self, entity_id: str) -> tuple[bool, str | None]:
        def read(conn: Any) -> tuple[bool, str | None]:
            row = conn.execute("SELECT state FROM entities WHERE entity_id = ?", (entity_id,)).fetchone()
            return (row is not None, row[0] if row else None)
        return await self.run(read)

    async def entities(self, *, prefix: str, updated_from: float | None, updated_to: float | None,
                       after: str | None, top: int | None) -> list[tuple[str, str | None, float]]:
        """(entity id, state, last operation time) of existing entities whose id starts with `prefix`."""
        clauses, params = ["entity_id >= ?", "entity_id < ?"], [prefix, prefix + "\U0010ffff"]
        for clause, value in (("updated >= ?", updated_from), ("updated <= ?", updated_to), ("entity_id > ?", after)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        limit = f"LIMIT {int(top)}" if top else ""

        def read(conn: Any) -> list[tuple[str, str | None, float]]:
            return [(r[0], r[1], float(r[2])) for r in conn.execute(
                f"SELECT entity_id, state, updated FROM entities WHERE {' AND '.join(clauses)} "
                f"ORDER BY entity_id {limit}", params)]
        return await self.run(read)

    async def recovery(self) -> tuple[list[WorkItem], list[tuple[str, float]]]:
        """Pending work, and (instance, earliest visible time) of every inbox, for a restart."""
        def read(conn: Any) -> tuple[list[WorkItem], list[tuple[str, float]]]:
            work = [WorkItem(instance_id, json.loads(body), work_id)
                    for work_id, instance_id, body in conn.execute("SELECT id, instance_id, body FROM work")]
            inboxes = [(r[0], float(r[1])) for r in conn.execute(
                "SELECT instance_id, MIN(visible_at) FROM messages GROUP BY instance_id")]
            return work, inboxes
        return await self.run(read)

    async def pending(self, now: float) -> tuple[int, int]:
        """(instances and entities with messages due, activity work items not finished) of the hub."""
        def read(conn: Any) -> tuple[int, int]:
            instances = conn.execute("SELECT COUNT(DISTINCT instance_id) FROM messages WHERE visible_at <= ?",
                                     (now,)).fetchone()[0]
            return int(instances), int(conn.execute("SELECT COUNT(*) FROM work").fetchone()[0])
        return await self.run(read)

    async def next_visible(self, instance_id: str) -> float | None:
        def read(conn: Any) -> float | None:
            row = conn.execute("SELECT MIN(visible_at) FROM messages WHERE instance_id = ?", (instance_id,)).fetchone()
            return float(row[0]) if row and row[0] is not None else None
        return await self.run(read)

    async def query(self, *, created_from: float | None, created_to: float | None, statuses: Iterable[str],
                    prefix: str | None, after: str | None, top: int | None) -> list[InstanceRow]:
        """Instances matching a filter, by id, without their history (as `instance(history=False)`)."""
        clauses, params = _filters(created_from, created_to, statuses, prefix)
        if after:
            clauses.append("instance_id > ?")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = f"LIMIT {int(top)}" if top else ""

        def read(conn: Any) -> list[InstanceRow]:
            return [InstanceRow.from_sql(r) for r in conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM instances {where} ORDER BY instance_id {limit}", params)]
        return await self.run(read)

    async def purge(self, instance_ids: Iterable[str] | None = None, *, created_from: float | None = None,
                    created_to: float | None = None, statuses: Iterable[str] = ()) -> int:
        """Delete instances (by id, or by filter) with their messages and work; returns how many."""
        ids = list(instance_ids) if instance_ids is not None else None

        def delete(conn: Any) -> int:
            if ids is None:
                clauses, params = _filters(created_from, created_to, statuses, None)
                where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
                targets = [r[0] for r in conn.execute(f"SELECT instance_id FROM instances {where}", params)]
            else:
                targets = ids
            deleted = 0
            for instance_id in targets:
                deleted += conn.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,)).rowcount
                conn.execute("DELETE FROM messages WHERE instance_id = ?", (instance_id,))
                conn.execute("DELETE FROM work WHERE instance_id = ?", (instance_id,))
            return deleted
        return await self.run(delete)


class SqliteStore(SqlStore):
    """One task hub's file, WAL, for one host."""

    kind = "sqlite"
    _begin = "BEGIN IMMEDIATE"
    _db_errors = (sqlite3.Error,)

    def open(self) -> None:
        """Open (creating if new) and verify the file; raises DurableStoreError naming it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._verify(conn)
        except sqlite3.DatabaseError as error:
            raise DurableStoreError(
                f"durable store {self.path} is not a usable SQLite database ({error}); move it away "
                "or point FUNCPLANE_STATE_DIR elsewhere") from None
        self._conn = conn
        self._start_thread()

    def _verify(self, conn: sqlite3.Connection) -> None:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if application_id != APPLICATION_ID and tables:
            raise DurableStoreError(
                f"durable store {self.path} belongs to another program (application id {application_id}, "
                f"tables {sorted(tables)}); refusing to use it - move it away or choose another state directory")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise DurableStoreError(f"durable store {self.path} is corrupt ({check}); restore it from a backup "
                                    "or move it away to start an empty task hub")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        if not tables:
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.executescript(_SCHEMA)
        self._check_meta(dict(conn.execute("SELECT key, value FROM meta").fetchall()), conn)


def _filters(created_from: float | None, created_to: float | None, statuses: Iterable[str],
             prefix: str | None) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if created_from is not None:
        clauses.append("created >= ?")
        params.append(created_from)
    if created_to is not None:
        clauses.append("created <= ?")
        params.append(created_to)
    wanted = [s for s in statuses if s]
    if wanted:
        clauses.append(f"status IN ({','.join('?' * len(wanted))})")
        params.extend(wanted)
    if prefix:
        clauses.append("instance_id >= ? AND instance_id < ?")
        params.extend([prefix, prefix + "\U0010ffff"])
    return clauses, params


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
