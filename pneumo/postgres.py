"""A local PostgreSQL server for the stack (``PNEUMO_DB=postgres``) and for the tests.

The server is Debian's (``/usr/lib/postgresql/<version>/bin``, or ``PNEUMO_POSTGRES_BIN``), its data
in the state folder, listening on 127.0.0.1 only, with password authentication: the password is
made once and kept in ``postgres/password`` (mode 600) and reaches the other servers through their
environment, never their command lines. PostgreSQL refuses to run as root, so when we are root the
server runs as the ``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2

USER = "pneumo"  # the role that owns the stack's databases
DATABASES = ("mlflow", "prefect", "predictions")
RUN_AS_WHEN_ROOT = "postgres"


def server_bin() -> Path:
    """The folder of ``postgres``, ``initdb`` and ``pg_ctl``: ``PNEUMO_POSTGRES_BIN``, else the newest
    of Debian's, else wherever ``initdb`` is on the PATH."""
    if configured := os.environ.get("PNEUMO_POSTGRES_BIN"):
        return Path(configured)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    if found := shutil.which("initdb"):
        return Path(found).parent
    raise FileNotFoundError(
        "PostgreSQL's server programs are not installed: apt-get install postgresql "
        "(or set PNEUMO_POSTGRES_BIN to the folder holding initdb and postgres)"
    )


@dataclass(frozen=True)
class LocalPostgres:
    """One server: its folder (``data``, ``password``) and port."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def password(self) -> str:
        """The role's password, made on first use."""
        if not self.password_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL of ``database``: psycopg2 (MLflow, the records), ``postgresql+asyncpg``
        (Prefect), or plain ``postgresql`` (libpq)."""
        return f"{driver}://{USER}:{quote(self.password(), safe='')}@127.0.0.1:{self.port}/{database}"

    def command(self) -> list[str]:
        """The server in the foreground; TCP on 127.0.0.1 only, no Unix socket."""
        return [str(server_bin() / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]  # fmt: skip

    def initialise(self) -> None:
        """``initdb`` the data folder unless it holds a cluster already."""
        if (self.data / "PG_VERSION").exists():
            return
        password = self.password()
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        pwfile = self.root / "initdb-password"
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        try:
            _hand_over(self.data, pwfile)
            subprocess.run(
                [str(server_bin() / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                 "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                 "--no-instructions"],
                check=True, capture_output=True, text=True, user=run_as(),
            )  # fmt: skip
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"initdb failed in {self.data}: {error.stderr.strip()}") from error
        finally:
            pwfile.unlink(missing_ok=True)

    def ready(self) -> bool:
        """Whether the server accepts our role's connections."""
        try:
            psycopg2.connect(self.url("postgres", "postgresql"), connect_timeout=2).close()
            return True
        except psycopg2.Error:
            return False

    def create_databases(self, names: tuple[str, ...] = DATABASES) -> None:
        """Create the databases that do not exist yet."""
        connection = psycopg2.connect(self.url("postgres", "postgresql"), connect_timeout=5)
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT datname FROM pg_database")
                existing = {row[0] for row in cursor.fetchall()}
                for name in names:
                    if name not in existing:
                        cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()


def run_as() -> str | None:
    """The user the server runs as: ourselves, or ``postgres`` when we are root."""
    return RUN_AS_WHEN_ROOT if os.geteuid() == 0 else None


def _hand_over(data: Path, *files: Path) -> None:
    """Give the data folder (and ``files``) to the user the server runs as, when that is not us."""
    user = run_as()
    if user is None:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError as error:
        raise RuntimeError(f"running as root, PostgreSQL needs the user {user!r}: "
                           "apt-get install postgresql creates it") from error  # fmt: skip
    for path in (data, *files):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    if subprocess.run(["test", "-w", str(data)], user=user, check=False).returncode != 0:
        raise RuntimeError(f"the user {user!r} cannot reach {data}: let it through the folders above "
                           "(chmod o+x), or set PNEUMO_STATE_DIR to a folder it can reach")  # fmt: skip
