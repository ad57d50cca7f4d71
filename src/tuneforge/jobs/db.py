"""Database engine, sessions and schema migrations (Alembic).

SQLite is the default (one file, WAL journal so readers never block the writer); any
SQLAlchemy URL works (``postgresql+psycopg://...`` for several machines).
"""

from __future__ import annotations

import fcntl
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.errors import InputError

DATABASE_URL_ENV = "TUNEFORGE_DATABASE_URL"
"""Where a worker hands the database URL to its training child (never on a command line)."""
MIGRATIONS = Path(__file__).with_name("migrations")
READ_ONLY = "tuneforge_read_only"  # execution option of sessions that only read


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path.resolve()}"


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print), parseable or not."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys.

    Raises:
        InputError: The URL cannot be parsed or names a driver that is not installed.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InputError(f"invalid database URL {mask_url(url)!r}: {exc}") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    kwargs: dict = {"pool_pre_ping": not is_sqlite}
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        raise InputError(f"database driver for {mask_url(url)!r} is not installed: {exc}") from None
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "connect", insert=True)
        def _autocommit_off(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # pragma: no cover - trivial
            # Every transaction takes the write lock at BEGIN (IMMEDIATE). In WAL mode a
            # transaction that reads and then writes is otherwise refused at once ("database
            # is locked", no busy wait) when another process wrote in between; with the lock
            # taken up front, writers queue on busy_timeout instead, and two claimers can
            # never both read the same "queued" row. Transactions here are all short.
            # Read-only sessions (``READ_ONLY``: API-key and model lookups on every request)
            # begin deferred: in WAL mode they never wait for a writer.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (objects are returned to callers)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (four workers starting)."""
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_suffix(".migrate.lock")
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_database(url: str) -> None:
    """Refuse a SQLite file that exists but is not a tuneforge database.

    A new database is made only where the file does not exist yet (a first start on a new
    data directory): an empty (0-byte) file, a file that is not SQLite, or a SQLite database
    without tuneforge's schema version table is refused, so that a truncated or misplaced
    file never silently becomes an empty database (every key, job and model gone).
    Other databases (Postgres) are not checked: an empty one is a first start.

    Raises:
        InputError: The file exists and is not a tuneforge database (what it is, and what
            to do).
    """
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    path = Path(database)
    if database.startswith("file:") or not path.exists():
        return
    what = _not_tuneforge(path)
    if what is not None:
        raise InputError(
            f"the database file {path} exists but is not a tuneforge database ({what}). "
            "Restore it from a backup, or move it away to start a new, empty database "
            "(a new database is only made where the file does not exist yet)."
        )


def _not_tuneforge(path: Path) -> str | None:
    """What the file at ``path`` is when it is not a tuneforge database, else None."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            header = fh.read(16)
    except OSError as exc:
        return f"it cannot be read: {exc.strerror}"
    if size == 0:
        return "it is empty (0 bytes)"
    if header != b"SQLite format 3\x00":
        return "it is not a SQLite file"
    try:
        # read-only: the check never writes to a file it may refuse
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            tables = {
                row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return f"SQLite cannot read it: {exc}"
    if "alembic_version" not in tables:
        return "a SQLite database without tuneforge's tables"
    return None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe from many processes).

    Raises:
        InputError: The SQLite file exists but is not a tuneforge database
            (``check_database``).
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine):
        # under the lock: another process may be creating the file this very moment
        check_database(engine.url.render_as_string(hide_password=False))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def probe(engine: Engine, tables: list[str]) -> str | None:
    """Read one row of each of ``tables``: None when all answer, else the error's reason.

    Cheap at any size (``LIMIT 1``), unlike an integrity check that reads every page; it
    finds a database that answers ``SELECT 1`` but whose tables cannot be read (damaged
    pages).
    """
    try:
        with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            for table in tables:
                conn.execute(text(f'SELECT * FROM "{table}" LIMIT 1')).all()
    except Exception as exc:
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        return (lines[0] if lines else type(orig).__name__)[:200]
    return None


def ping(engine: Engine) -> bool:
    """True when the database answers ``SELECT 1``."""
    try:
        with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
