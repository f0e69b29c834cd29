"""The run directory: the one place services meet besides gRPC.

    RUN_DIR/
      config.toml          resolved configuration, written once by whoever starts the run
      secret               per-run token (mode 0600); every RPC carries it
      addresses/ROLE-I     host:port of each server, written atomically after it binds
      targets/ROLE-I.json  Prometheus file_sd entry for each process's /metrics
      checkpoints/         per shard
      tensorboard/         event files
      videos/              recorded evaluation episodes
      logs/                one JSON-lines log per process

Every write that another process may read concurrently goes through `atomic_write`
(write to a temporary file, fsync, rename, fsync the directory), so a reader sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
import time
from pathlib import Path

from ba3c import config as configuration

SUBDIRS = ("addresses", "targets", "checkpoints", "tensorboard", "videos", "logs")


class RunDirError(RuntimeError):
    """Something about the run directory that stops a service from starting."""


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replaces `path` with `data` so that readers never see a partial file."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunDir:
    """Paths and small files of one run. Cheap to construct; touches nothing until asked."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- layout ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def secret_path(self) -> Path:
        return self.path / "secret"

    def sub(self, name: str) -> Path:
        return self.path / name

    def checkpoints(self, shard: int) -> Path:
        return self.path / "checkpoints" / f"paramserver-{shard}"

    def log_path(self, role: str, index: int) -> Path:
        return self.path / "logs" / f"{role}-{index}.log"

    def ensure(self) -> RunDir:
        """Creates the directory tree (idempotent, safe when many processes race)."""
        for name in SUBDIRS:
            (self.path / name).mkdir(parents=True, exist_ok=True)
        return self

    # -- creation, by whoever starts the run -------------------------------------------------
    def create(self, cfg: configuration.Config) -> bool:
        """Writes config.toml and the secret unless they exist. True if this call wrote them.

        Existing files are kept as they are: a resumed or requeued run keeps its config and
        token, and only one of several racing starters wins.
        """
        self.ensure()
        wrote = False
        if not self.config_path.exists():
            try:
                fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(configuration.to_toml(cfg))
                    f.flush()
                    os.fsync(f.fileno())
                wrote = True
        self.write_secret()
        return wrote

    def write_secret(self) -> bool:
        """Creates the token file with mode 0600 if it is missing. True if it wrote it."""
        try:
            fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True

    # -- reading, by every service -------------------------------------------------------------
    def load_config(self, environ=None, args=None) -> configuration.Config:
        """The run's configuration: config.toml, then BA3C_* variables, then flags."""
        toml = self.config_path if self.config_path.exists() else None
        return configuration.load(toml, environ=environ, args=args)

    def read_secret(self) -> str:
        """The run's token. Refuses a secret that others can read, or none at all."""
        try:
            st = self.secret_path.stat()
        except FileNotFoundError:
            raise RunDirError(
                f"{self.secret_path} does not exist; start the run with `ba3c train` or "
                "`ba3c init-run`, which write it"
            ) from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RunDirError(
                f"{self.secret_path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run `chmod 600 {self.secret_path}` and start again"
            )
        token = self.secret_path.read_text().strip()
        if not token:
            raise RunDirError(f"{self.secret_path} is empty")
        return token

    # -- service discovery ------------------------------------------------------------------------
    def address_path(self, role: str, index: int) -> Path:
        return self.path / "addresses" / f"{role}-{index}"

    def write_address(self, role: str, index: int, address: str) -> None:
        atomic_write(self.address_path(role, index), address + "\n")

    def remove_address(self, role: str, index: int) -> None:
        try:
            self.address_path(role, index).unlink()
        except FileNotFoundError:
            pass

    def read_address(self, role: str, index: int) -> str | None:
        try:
            text = self.address_path(role, index).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def addresses(self, role: str) -> dict[int, str]:
        """{index: host:port} of every published server of `role`."""
        out: dict[int, str] = {}
        folder = self.path / "addresses"
        if not folder.is_dir():
            return out
        for p in folder.glob(f"{role}-*"):
            suffix = p.name[len(role) + 1 :]
            if suffix.isdigit():
                text = p.read_text().strip()
                if text:
                    out[int(suffix)] = text
        return dict(sorted(out.items()))

    def wait_for_address(
        self,
        role: str,
        index: int,
        timeout: float | None = None,
        poll: float = 0.1,
        stop=None,
    ) -> str:
        """Polls until addresses/ROLE-I exists; raises TimeoutError after `timeout` seconds.

        `stop` may be a threading.Event: when it is set, waiting ends with TimeoutError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            address = self.read_address(role, index)
            if address:
                return address
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.address_path(role, index)} did not appear in {timeout}s")
            if stop is not None:
                if stop.wait(poll):
                    raise TimeoutError("stopped while waiting for " + f"{role}-{index}")
            else:
                time.sleep(poll)

    # -- Prometheus file_sd ---------------------------------------------------------------------
    def target_path(self, role: str, index: int) -> Path:
        return self.path / "targets" / f"{role}-{index}.json"

    def write_target(self, role: str, index: int, address: str, run: str | None = None) -> None:
        """One file_sd entry; the labels run/role/index are attached by Prometheus."""
        entry = [
            {
                "targets": [address],
                "labels": {"run": run or self.path.name, "role": role, "index": str(index)},
            }
        ]
        atomic_write(self.target_path(role, index), json.dumps(entry, indent=1) + "\n")

    def remove_target(self, role: str, index: int) -> None:
        try:
            self.target_path(role, index).unlink()
        except FileNotFoundError:
            pass
