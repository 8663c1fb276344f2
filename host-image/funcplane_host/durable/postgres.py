"""The shared durable store: PostgreSQL, for many hosts (pods) on one task hub.

The tables are those of the embedded store, in a PostgreSQL schema named after the hub. Hosts
find work by polling. An episode runs under a lease on its instance and commits only while it
still holds it (the commit checks and releases the lease in the same transaction); an activity
runs under a lease on its work row. A host renews its leases while it works; one that dies stops
renewing, and another host takes its instances and activities over once the leases run out.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg

from funcplane_host.durable.store import (
    APPLICATION_ID,
    DurableStoreError,
    LeaseLost,
    SqlStore,
    WorkItem,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances(
    instance_id TEXT PRIMARY KEY, name TEXT NOT NULL, execution_id TEXT NOT NULL, status TEXT NOT NULL,
    input TEXT, output TEXT, custom_status TEXT, created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL, parent TEXT, history TEXT NOT NULL, state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS instances_created ON instances(created);
CREATE TABLE IF NOT EXISTS messages(
    id BIGSERIAL PRIMARY KEY, instance_id TEXT NOT NULL, visible_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_instance ON messages(instance_id, id);
CREATE INDEX IF NOT EXISTS messages_visible ON messages(visible_at);
CREATE TABLE IF NOT EXISTS work(
    id BIGSERIAL PRIMARY KEY, instance_id TEXT NOT NULL, body TEXT NOT NULL, owner TEXT,
    expires DOUBLE PRECISION NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS entities(entity_id TEXT PRIMARY KEY, state TEXT, updated DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS leases(instance_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL);
"""
OUR_TABLES = {"meta", "instances", "messages", "work", "entities", "leases"}


class _Connection:
    """psycopg behind the sqlite3 calls the shared SQL uses (`?` placeholders)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params or None)

    def executemany(self, sql: str, rows: list[Any]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def close(self) -> None:
        self.conn.close()


class _Busy(Exception):
    """A lease row is locked by another host's transaction right now."""


class PostgresStore(SqlStore):
    kind = "postgresql"
    shared = True
    _db_errors = (psycopg.Error,)

    def __init__(self, dsn: str, hub: str, owner: str, lease_seconds: float) -> None:
        super().__init__(f"postgresql task hub {hub}", hub)
        self.dsn = dsn
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.schema = "dt_" + re.sub(r"[^a-z0-9]", "", hub.lower())

    def open(self) -> None:
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            raise DurableStoreError(f"durable store: cannot connect to PostgreSQL ({error}); check the "
                                    "connection string setting named by storageProvider.connectionStringName") from None
        try:
            self._verify(_Connection(conn))
        except psycopg.Error as error:
            conn.close()
            raise DurableStoreError(f"durable store {self.path}: {error}") from None
        except DurableStoreError:
            conn.close()
            raise
        self._conn = _Connection(conn)
        self._start_thread()

    def _verify(self, conn: _Connection) -> None:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", (self.schema,))}
        if tables and not {"meta", "instances"} <= tables:
            raise DurableStoreError(
                f"durable store {self.path}: schema {self.schema!r} holds other tables ({sorted(tables)}); "
                "refusing to use it - choose another hub name or database")
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        conn.execute(f'SET search_path TO "{self.schema}"')
        conn.execute("SELECT pg_advisory_lock(?)", (APPLICATION_ID,))  # hosts create the schema one at a time
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            self._check_meta(dict(conn.execute("SELECT key, value FROM meta").fetchall()), conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(?)", (APPLICATION_ID,))

    # ---- leases ---------------------------------------------------------------------------------

    async def claim_instance(self, instance_id: str, now: float) -> bool:
        def claim(conn: Any) -> bool:
            # Another host may be committing this instance: give up at once rather than hold up
            # this host's whole batch behind its row lock (polling brings the instance back).
            conn.execute("SET LOCAL lock_timeout = '20ms'")
            try:
                row = self._claim_row(conn, instance_id, now)
            except psycopg.errors.LockNotAvailable:
                raise _Busy() from None
            conn.execute("SET LOCAL lock_timeout = 0")
            return row is not None
        try:
            return await self.run(claim)
        except _Busy:
            return False

    def _claim_row(self, conn: Any, instance_id: str, now: float) -> Any:
        return conn.execute(
            "INSERT INTO leases VALUES (?,?,?) ON CONFLICT (instance_id) DO UPDATE SET owner = excluded.owner, "
            "expires = excluded.expires WHERE leases.expires < ? OR leases.owner = excluded.owner RETURNING owner",
            (instance_id, self.owner, now + self.lease_seconds, now)).fetchone()

    async def release_instance(self, instance_id: str) -> None:
        await self.run(lambda conn: conn.execute("DELETE FROM leases WHERE instance_id = ? AND owner = ?",
                                                 (instance_id, self.owner)))

    def fence(self, instance_id: str) -> Any:
        """A check for Changes.fence: commit only while this host holds the instance, and release it."""
        def check(conn: Any) -> None:
            row = conn.execute("DELETE FROM leases WHERE instance_id = ? RETURNING owner", (instance_id,)).fetchone()
            if row is None or row[0] != self.owner:
                raise LeaseLost(f"durable store {self.path}: the lease on {instance_id} passed to another host")
        return check

    async def due_instances(self, now: float, limit: int) -> list[str]:
        """Instances with visible messages that no live lease covers."""
        def read(conn: Any) -> list[str]:
            return [r[0] for r in conn.execute(
                "SELECT DISTINCT m.instance_id FROM messages m LEFT JOIN leases l ON l.instance_id = m.instance_id "
                "WHERE m.visible_at <= ? AND (l.instance_id IS NULL OR l.expires < ?) LIMIT ?", (now, now, limit))]
        return await self.run(read)

    async def claim_work(self, now: float, limit: int) -> list[WorkItem]:
        """Take up to `limit` work items nobody holds (or whose holder stopped renewing)."""
        def claim(conn: Any) -> list[WorkItem]:
            rows = conn.execute(
                "UPDATE work SET owner = ?, expires = ? WHERE id IN (SELECT id FROM work WHERE owner IS NULL OR "
                "expires < ? ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING id, instance_id, body",
                (self.owner, now + self.lease_seconds, now, limit)).fetchall()
            return [WorkItem(instance_id, json.loads(body), int(work_id)) for work_id, instance_id, body in rows]
        return await self.run(claim)

    async def renew(self, work_ids: list[int], instance_ids: list[str], now: float) -> None:
        expires = now + self.lease_seconds

        def renew(conn: Any) -> None:
            if work_ids:
                conn.execute("UPDATE work SET expires = ? WHERE owner = ? AND id = ANY(?)",
                             (expires, self.owner, work_ids))
            if instance_ids:
                conn.execute("UPDATE leases SET expires = ? WHERE owner = ? AND instance_id = ANY(?)",
                             (expires, self.owner, instance_ids))
        await self.run(renew)
