"""Engine fixtures: a throwaway PostgreSQL server for the session, and state stores of both kinds.

PostgreSQL refuses to run as root, and tests run as root in CI: the server is initialised and started as
an unprivileged user (``postgres`` if it exists, else ``nobody``) in a temporary folder it owns. TCP
connections need a password (scram), so the store's password handling is exercised for real.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mapsync.engine.config import Secret
from mapsync.engine.state import StateStore, open_store

PG_PASSWORD = "pg-test-pw-Zq7"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    database: str
    password: Secret

    def url(self, schema: str | None = None) -> str:
        base = f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"
        return f"{base}?options=-csearch_path%3D{schema}" if schema else base


def _server_bindir() -> Path | None:
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if all((folder / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _as_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that drops root, and the user it drops to ([] and None when not root)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"], user
    pytest.skip("PostgreSQL cannot run as root and neither runuser nor setpriv is available")
    raise AssertionError  # unreachable: skip raises


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _server_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binary: neither initdb on PATH nor /usr/lib/postgresql/*/bin/initdb")
    prefix, user = _as_user()
    base = Path(tempfile.mkdtemp(prefix="mapsync-pg-"))  # not under pytest's 0700 root-owned tmp folder
    data, log = base / "data", base / "server.log"
    (base / "pwfile").write_text(PG_PASSWORD + "\n")
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
        os.chown(base / "pwfile", user.pw_uid, user.pw_gid)
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}\n{tail}")

    run(
        str(bindir / "initdb"), "-D", str(data), "-U", "mapsync", f"--pwfile={base / 'pwfile'}",
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
    )  # fmt: skip
    server_options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off"
        " -c full_page_writes=off -c max_connections=50"
    )
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", server_options, "start")
    try:
        import psycopg

        with psycopg.connect(host=str(base), port=port, user="mapsync", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE mapsync_test")
        yield PostgresServer("127.0.0.1", port, "mapsync", "mapsync_test", Secret(PG_PASSWORD, "${PG_TEST}"))
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


_schemas = itertools.count(1)

StoreFactory = Callable[..., StateStore]


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on one fresh location of the parametrized kind; every store opened is closed after."""
    opened: list[StateStore] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'stage.sqlite'}"
        password = None
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        import psycopg

        schema = f"t{next(_schemas)}_{os.getpid()}"
        with psycopg.connect(server.url(), password=server.password.reveal(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url, password = server.url(schema), server.password

    def make(**options: Any) -> StateStore:
        if password is not None:
            options.setdefault("password", password)
        store = open_store(url, **options)
        opened.append(store)
        return store

    make.url = url  # type: ignore[attr-defined]
    make.kind = request.param  # type: ignore[attr-defined]
    make.password = password  # type: ignore[attr-defined]
    yield make
    for store in opened:
        with contextlib.suppress(Exception):  # a test may have closed it already
            store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> StateStore:
    return store_factory()
