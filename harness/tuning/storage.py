"""Optuna storage URLs, and the study lock that lets several tuners share one study.

Accepted storage URLs:

- ``sqlite:///path/study.db`` (the default, in the study folder): one machine;
- ``postgresql://user:password@host:5432/db`` (or ``postgresql+psycopg2://``): any number of
  machines; needs ``psycopg2`` (``pip install psycopg2-binary``);
- ``journal:/path/study.journal``: Optuna's journal file, for tuners on one machine or on a shared
  filesystem with working ``flock`` (NFSv4); no heartbeat, so a killed tuner's RUNNING trial is
  failed only by the tuner that owned it being restarted (see ``parallel``).

The lock serialises the few moments where tuners must not race (asking for the next trial,
the duplicate check, enqueueing baselines, deciding who re-measures the winner). It lives where
the storage lives: an advisory lock in PostgreSQL, an ``flock`` beside a file storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import time
import warnings
import zlib
from pathlib import Path

from harness.errors import ConfigError

HEARTBEAT_S = 10  # a RUNNING trial whose tuner stopped beating for GRACE_S is failed
GRACE_S = 30


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def kind(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql:", "postgresql+", "postgres:")):
        return "postgresql"
    if url.startswith("journal:"):
        return "journal"
    if re.match(r"^[a-z0-9+]+://", url):
        return "rdb"
    raise ConfigError(
        f"storage {redact(url)!r} is not a storage URL",
        hint="use sqlite:///path.db, postgresql://user:pass@host/db or journal:/path/study.journal",
    )


def journal_path(url: str) -> Path:
    path = url[len("journal:") :]
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise ConfigError("journal storage needs a file: journal:/path/study.journal")
    return Path(path).expanduser().resolve()


def open_storage(url: str):
    """An Optuna storage for ``url``; errors say which URL failed and what to do."""
    import optuna

    k = kind(url)
    if k == "journal":
        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if k == "postgresql":
        url = sqlalchemy_url(url)
    last = None
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # Heartbeats let Optuna fail the RUNNING trial of a killed tuner (after the
                # grace period) without touching trials another tuner sharing it is running.
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except Exception as exc:  # sqlalchemy's OperationalError and friends
            # two tuners creating the tables of a fresh database at once: one of them loses
            # the race (a unique violation), and the tables exist by the next attempt
            last = exc
            time.sleep(0.5 + attempt)
    first = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    raise ConfigError(
        f"cannot open the study storage {redact(url)}: {first}",
        hint="check the URL, that the database server runs and that its port is reachable",
    )


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL with a driver SQLAlchemy can load (it picks psycopg 3 by default)."""
    if kind(url) != "postgresql" or url.startswith("postgresql+"):
        return url
    rest = url.split(":", 1)[1]
    for module, dialect in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg")):
        try:
            __import__(module)
        except ImportError:
            continue
        return f"{dialect}:{rest}"
    raise ConfigError(
        "a PostgreSQL storage needs the psycopg2 driver",
        hint="pip install psycopg2-binary (the postgres extra: pip install -e '.[postgres]')",
    )


class StudyLock:
    """A lock shared by every tuner of one study, wherever the storage is reachable from."""

    def __init__(self, url: str, study: str) -> None:
        self.url = url
        self.kind = kind(url)
        self.key = zlib.crc32(study.encode())  # one advisory lock number per study
        self._engine = None
        if self.kind == "sqlite":
            db = url.split(":///", 1)[-1] if ":///" in url else ""
            self.path = Path(f"{db or 'study'}.{self.key}.lock") if db != ":memory:" else None
        elif self.kind == "journal":
            self.path = journal_path(url).with_suffix(f".{self.key}.lock")
        else:
            self.path = None

    @contextlib.contextmanager
    def hold(self, name: str = "ask", *, wait: bool = True):
        """Hold lock ``name`` (``ask`` or ``winner``); yields False if ``wait`` is False and
        another tuner holds it. Released when the block ends or the process dies."""
        if self.kind == "postgresql":
            with self._pg(name, wait) as got:
                yield got
            return
        if self.path is None:  # another RDB: no cross-machine lock we can rely on
            yield True
            return
        path = self.path.with_name(self.path.name.replace(".lock", f".{name}.lock"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _pg(self, name: str, wait: bool):
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(
                sqlalchemy_url(self.url), poolclass=sqlalchemy.pool.NullPool
            )
        key = self.key ^ (0 if name == "ask" else zlib.crc32(name.encode()))
        key = key - (1 << 32) if key >= (1 << 31) else key  # PostgreSQL's int4 range
        with self._engine.connect() as conn:
            fn = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
            got = conn.execute(sqlalchemy.text(f"SELECT {fn}(1, :k)"), {"k": key}).scalar()
            got = True if wait else bool(got)
            try:
                yield got
            finally:
                if got:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(1, :k)"), {"k": key})

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
