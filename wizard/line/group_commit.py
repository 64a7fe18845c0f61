"""Group commit for the receiver: deliveries that arrive together share one transaction.

Every request still answers only after its own delivery is committed; what is shared is the cost of a
commit (its round trips, its fsync, SQLite's single write lock). Each request thread queues its item; if no
thread of this process is writing, it takes everything queued and writes it in one transaction, otherwise it
waits for the writer, which takes its item along. Nobody waits on a timer: a lone delivery is written at
once, and under load each commit carries everything that arrived while the previous one ran.

Each database has its own way in: on PostgreSQL, ``PostgresWriter`` keeps one autocommit connection per process
outside the app's pool and a batch is one statement (store.insert_batch_postgres); on SQLite, ``SqliteWriter``
keeps writers from stalling one another (see there).
"""
import fcntl
import logging
import os
import select
import sqlite3
import threading
import time
from _thread import allocate_lock as _allocate_lock
from contextlib import contextmanager

import psycopg
from sqlalchemy import create_engine, event

from ..extensions import BUSY_TIMEOUT, db, take_write_lock, tune_sqlite

log = logging.getLogger(__name__)


class GroupCommit:
    """``write_batch(batch, connection)`` writes items inside a transaction; items need ``done``, ``error``
    and ``woken`` attributes, which are set here once the item is committed or has failed."""

    def __init__(self, write_batch, database_url):
        self._write_batch = write_batch
        self._lock = threading.Lock()
        self._queue = []
        self._writing = False
        self._sqlite = SqliteWriter.for_url(database_url)
        self._postgres = PostgresWriter(database_url) if database_url.get_backend_name() == "postgresql" else None
        # Only a database without a writer of its own (SQLite in memory, in tests) writes through the app's
        # session, which needs the app's context.
        self.needs_app_context = self._sqlite is None and self._postgres is None

    def submit(self, item):
        """Return once ``item`` is committed (or failed: then ``item.error`` says why).

        Each waiting thread sleeps on its own lock (``woken``, taken at once) and is woken exactly once, by its
        release: when its item is done, or when the writer before it hands over (then it writes everything
        queued, its own item first). A bare lock, not an Event: releasing one is a single call into C, where an
        Event's ``set`` takes its condition's lock and walks its waiters, and every delivery paid for both.
        """
        woken = item.woken = _allocate_lock()
        woken.acquire()
        with self._lock:
            self._queue.append(item)
            lead = not self._writing
            self._writing = True
        if not lead:
            woken.acquire()
            if item.done:
                return
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        finally:
            for waiting in batch:
                if not waiting.done:  # only an unexpected BaseException gets here
                    waiting.error, waiting.done = RuntimeError("not written"), True
                waiting.woken.release()
            with self._lock:
                successor = self._queue[0] if self._queue else None
                self._writing = successor is not None
            if successor is not None:
                successor.woken.release()  # not done: it takes over as the writer

    def warm_up(self):
        """Write an empty batch, as a writer does, so the first deliveries find the way in ready.

        Why: a new worker's first batch used to open the writer's connection, build and prepare its statement
        and plan it in a fresh server process (0.4 s on a busy machine, more while a restart's new workers
        import the app), and every delivery arriving meanwhile waited behind it. The restart (wizard/restart.py)
        runs this before it counts the worker as ready. If deliveries are being written already, there is
        nothing to warm; a delivery arriving meanwhile waits and then writes, as behind any writer."""
        with self._lock:
            if self._writing:
                return
            self._writing = True
        try:
            self._transaction([])
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                self._writing = successor is not None
            if successor is not None:
                successor.woken.release()  # not done: it takes over as the writer

    def _commit(self, batch):
        """The batch in one transaction; if that fails, each item alone, so one cannot sink the others."""
        try:
            self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                # Only the class: SQLAlchemy's message carries the statement's parameters (customers' data).
                log.warning("a batch of %d failed (%s); writing them one by one", len(batch),
                            type(exc).__name__)
                for item in batch:
                    try:
                        self._transaction([item])
                    except Exception as single:
                        item.error = single
        for item in batch:
            item.done = True

    def _transaction(self, batch):
        if self._sqlite is not None:
            with self._sqlite.transaction() as connection:
                self._write_batch(batch, connection)
            return
        if self._postgres is not None:
            self._postgres.run(lambda raw: self._write_batch(batch, raw))
            return
        try:
            self._write_batch(batch, db.session.connection())
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise


class PostgresWriter:
    """The receiver's own PostgreSQL connection in this process: autocommit, one statement per batch.

    Only one thread of a process writes at a time (GroupCommit), so one connection is all it needs, and it is
    kept out of the app's pool: no checkout, no ping, no transaction to open and commit around the batch.
    A connection the server has dropped is replaced before use (a closed socket or the server's goodbye makes
    it readable while idle) or, if that is only found in the middle, the batch is sent once more on a new
    one. Sending it again is safe: events are unique per channel, so a batch that did commit before the
    connection broke stores nothing new the second time (at most one more delivery row records the retry).
    """

    def __init__(self, url):
        self._url = url
        self._raw = None

    def run(self, write):
        try:
            return write(self._connection())
        except psycopg.OperationalError:
            self.close()
            log.warning("the receiver's database connection broke; writing the batch again on a new one")
            return write(self._connection())

    def _connection(self):
        raw = self._raw
        if raw is not None and (raw.closed or raw.broken or _readable(raw)):
            self.close()
            raw = None
        if raw is None:
            # The URL's own dialect, not the app's engine: a writer needs no app context (line/fast_path.py).
            cargs, cparams = self._url.get_dialect()().create_connect_args(self._url)
            raw = self._raw = psycopg.connect(*cargs, **cparams, autocommit=True)
        return raw

    def close(self):
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.close()
            except psycopg.Error:
                pass


def _readable(raw):
    """An idle connection has nothing to read unless the server closed it (or sent a notice, never here)."""
    ready, _, _ = select.select([raw.fileno()], [], [], 0)
    return bool(ready)


class SqliteWriter:
    """The receiver's own way into a SQLite file; one per process and file.

    - SQLite has one writer per file and makes the others poll with sleeps (1, 2, 5, 10 … ms) when two
      processes (gunicorn workers) collide. Taking turns on a file lock first makes the loser wait in the
      kernel and wake the moment the winner is done, while its own queue grows into a larger batch.
    - The receiver takes SQLite's write lock as every writer of the app does (extensions.take_write_lock:
      ``BEGIN IMMEDIATE`` looked at again every millisecond or so, where SQLite's own wait sleeps up to
      100 ms between looks), and looks more often than the others, so a delivery is stored first when the
      receiver and the queue's consumer both wait.
    - In WAL mode the connection whose commit finds the log over 1000 pages copies it into the database
      and syncs it (about 100 ms here), and every delivery queued behind that commit waits. So the
      receiver writes through its own small engine whose connections never checkpoint, and a background
      thread checkpoints every second while deliveries arrive (PASSIVE: it blocks neither readers nor
      writers). Everyone else's connections keep SQLite's automatic checkpoint, so the log stays bounded
      even without this thread.
    """

    _by_path = {}
    _by_path_lock = threading.Lock()

    @classmethod
    def for_url(cls, url):
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        key = (os.getpid(), url.database)
        with cls._by_path_lock:
            writer = cls._by_path.get(key)
            if writer is None:
                writer = cls._by_path[key] = cls(url)
        return writer

    def __init__(self, url, interval=1.0, idle_after=30.0):
        self.path = url.database
        # Every use is ``engine.begin()``, which ends its transaction itself: no rollback on the way back to the pool.
        self.engine = create_engine(url, pool_size=1, max_overflow=2, hide_parameters=True, pool_reset_on_return=None)
        tune_sqlite(self.engine)
        event.listen(self.engine, "connect", _no_automatic_checkpoint)
        self._interval, self._idle_after = interval, idle_after
        self._last_write = time.monotonic()
        self._thread = None
        self._thread_lock = threading.Lock()
        self._lock = None

    @contextmanager
    def transaction(self):
        self._last_write = time.monotonic()
        self._ensure_checkpointer()
        lock_file = self._lock_file()
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with self.engine.begin() as connection:
                take_write_lock(connection.connection.driver_connection, BUSY_TIMEOUT, LOOK_AGAIN)
                yield connection
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _lock_file(self):
        """The lock file, opened once per process (one open and close per commit was a tenth of its cost).
        Only one thread of a process writes at a time (GroupCommit), so one descriptor serves them all."""
        lock_file = self._lock
        if lock_file is None or lock_file.closed:
            lock_file = self._lock = open(self.path + ".write-lock", "a+b")  # noqa: SIM115  (kept open)
        return lock_file

    def _ensure_checkpointer(self):
        if self._thread is not None and self._thread.is_alive():
            return
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._checkpoint_while_busy, daemon=True,
                                                name="wizard-sqlite-checkpoint")
                self._thread.start()

    def _checkpoint_while_busy(self):
        """Checkpoint every ``interval`` s; after ``idle_after`` s without deliveries, close up and stop."""
        try:
            # mode=rw: never create an empty database where the real one went away.
            connection = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=1.0,
                                         isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while time.monotonic() - self._last_write <= self._idle_after:
                time.sleep(self._interval)
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or briefly unavailable: the next round tries again
                    log.debug("checkpoint of %s skipped: %s", self.path, exc)
        finally:
            connection.close()
            self.engine.dispose()  # idle: no connection held (the lock file stays); the next delivery reconnects


def _no_automatic_checkpoint(dbapi_connection, _record):
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


# How long the receiver waits between two looks at SQLite's write lock, at first and at most: more often than
# other writers (extensions.LOOK_AGAIN), so a delivery is stored first when both wait.
LOOK_AGAIN = (0.0002, 0.001)
