"""A private PostgreSQL cluster for the shared-study tests: Debian's binaries, a throwaway data
directory, 127.0.0.1 on a free port, stopped at the end (nothing is left running).

scripts/test.sh installs Debian's ``postgresql`` package on a fresh machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@pytest.fixture(scope="session")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)")
    data = tempfile.mkdtemp(prefix="tfs-harness-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use Debian's postgres user
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    log = os.path.join(data, "server.log")
    pgdata = os.path.join(data, "db")

    def run(*cmd, timeout=120):
        out = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    run(f"{bindir}/initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(
        f"{bindir}/pg_ctl",
        "-D",
        pgdata,
        "-l",
        log,
        "-w",
        "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off",
        "start",
    )
    try:
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        end = time.monotonic() + 30
        while True:
            try:
                with engine.connect() as c:
                    c.execute(sqlalchemy.text("CREATE DATABASE studies"))
                break
            except sqlalchemy.exc.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)
        engine.dispose()
        yield f"postgresql://postgres@127.0.0.1:{port}/studies"
    finally:
        subprocess.run(
            [*prefix, f"{bindir}/pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)
