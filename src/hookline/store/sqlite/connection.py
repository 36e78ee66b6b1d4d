"""SQLite connections: one writer thread that commits in groups, and a few reader threads.

SQLite allows one writer at a time, so every write goes through a single thread. Jobs that queue
up while a transaction is being written are run together in the next transaction, each inside
its own savepoint: one fsync covers many requests (group commit), a job that raises is rolled
back alone, and no caller hears back before the commit that holds its work is on disk.

Jobs that only move leases and record attempt results are not "durable": losing them in a
power cut means an attempt is made again, which at-least-once delivery allows. They are
committed in a transaction of their own at ``synchronous=NORMAL`` (no fsync), ahead of the
durable jobs queued with them; the next durable commit syncs the write-ahead log with
everything before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hookline.errors import StoreUnavailable
from hookline.store.migrations import load_migrations, pending_migrations

T = TypeVar("T")

MAX_JOBS_PER_TRANSACTION = 256
BUSY_TIMEOUT_MS = 5_000
READER_THREADS = 2


def connect(path: Path, synchronous: str, *, read_only: bool = False) -> sqlite3.Connection:
    """Open a connection with the settings every hookline connection shares."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply the migrations this database lacks; return the versions applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    # BEGIN IMMEDIATE takes the write lock first, so two processes cannot both apply a version.
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        todo = pending_migrations(load_migrations("sqlite"), applied)
        for migration in todo:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return [migration.version for migration in todo]


def _statements(script: str) -> list[str]:
    # executescript() would commit our transaction, so split on statement ends instead.
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


@dataclass(slots=True)
class _Job:
    work: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    durable: bool


class Writer:
    """The one thread that writes, grouping queued jobs into shared transactions."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="hookline-sqlite-writer", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self) -> None:
        """Finish every queued job, then close the connection."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    async def run(self, work: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run ``work(conn, *args)`` in a write transaction; return once it is committed.

        ``durable=False`` lets the commit skip the fsync when nothing else in the same
        transaction needs it; use it only for work that may be redone after a power cut.
        """
        if self._thread is None:
            raise StoreUnavailable("The SQLite store is closed.")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(work, args, future, loop, durable))
        return await future

    def _run(self) -> None:
        try:
            conn = connect(self._path, self._synchronous)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        syncing = self._synchronous.upper()
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_JOBS_PER_TRANSACTION:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            # Lease moves and results go first, in a transaction of their own without a sync,
            # so a claim never waits for the disk flush that accepted events need.
            quick = [job for job in batch if not job.durable]
            durable = [job for job in batch if job.durable]
            for jobs, level in ((quick, "NORMAL"), (durable, self._synchronous.upper())):
                if not jobs:
                    continue
                if level != syncing:
                    conn.execute(f"PRAGMA synchronous = {level}")
                    syncing = level
                self._commit(conn, jobs)

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                outcomes.append(_run_in_savepoint(conn, job))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"The SQLite store could not commit: {exc}.")
            failure.__cause__ = exc
            outcomes = [(False, failure)] * len(batch)
        # One hop back to each event loop for the whole batch, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job, ok, value))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed while we wrote
                loop.call_soon_threadsafe(_settle, settled)


def _run_in_savepoint(conn: sqlite3.Connection, job: _Job) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT job")
    try:
        value = job.work(conn, *job.args)
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        if isinstance(exc, sqlite3.Error):
            failure = StoreUnavailable(f"The SQLite store failed a write: {exc}.")
            failure.__cause__ = exc
            return False, failure
        return False, exc
    conn.execute("RELEASE job")
    return True, value


def _settle(settled: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in settled:
        if job.future.done():  # the caller went away; its work is committed all the same
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


class Readers:
    """A few threads, each with its own read-only connection, for queries."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="hookline-sqlite-read")

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(conn, *args)`` on a reader thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, work, args)

    def _call(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, self._synchronous, read_only=True)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        try:
            return work(conn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"The SQLite store failed a read: {exc}.") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
