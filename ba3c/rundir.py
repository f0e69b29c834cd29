"""The run directory: the one place services meet besides gRPC.

    RUN_DIR/
      config.toml          resolved configuration, written once by whoever starts the run
      secret               per-run token (mode 0600); every RPC carries it
      addresses/ROLE-I     host:port of each server, written atomically after it binds
      targets/ROLE-I.json  Prometheus file_sd entry for each process's /metrics
      checkpoints/paramserver-K/ckpt-<version, 12 digits>.ckpt   per shard (ba3c/checkpoint.py)
      eval.jsonl           one JSON object per evaluation, appended by the evaluator
      tensorboard/         event files
      videos/              recorded evaluation episodes
      logs/                one JSON-lines log per process

`RunDir` is the only reader and writer of these names: other modules ask it for a path or a
record, they never build one. Every file that another process may read while it is written
is either replaced whole through `atomic_file` (write a temporary file beside it, fsync,
rename or link it into place, fsync the folder: config.toml, secret, addresses, targets,
checkpoints, TLS files), so a reader sees the old file or the new one, never half of one;
or only ever appended to, line by line (eval.jsonl with one write(2) per line, the logs),
and readers skip a last line that is not complete yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ba3c import config as configuration

SUBDIRS = ("addresses", "targets", "checkpoints", "tensorboard", "videos", "logs")


class RunDirError(RuntimeError):
    """Something about the run directory that stops a service from starting."""


class Stopped(RuntimeError):
    """A wait ended because the process was asked to stop (not because time ran out)."""


_CHECKPOINT = re.compile(r"^ckpt-(\d{12})\.ckpt$")
_SHARD_CHECKPOINTS = re.compile(r"^paramserver-(\d+)$")


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644, exclusive: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write that appears at `path` only whole, once the block ends.

    The data goes to a temporary file beside `path`, is fsynced, then renamed over `path`
    (or, with `exclusive`, linked to it, which raises FileExistsError if `path` exists, so
    that one of several racing writers wins), and the folder is fsynced. If the block
    raises, `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644, exclusive: bool = False) -> bool:
    """Replaces `path` with `data` so that readers never see a partial file.

    With `exclusive`, writes only if `path` does not exist yet; returns whether it wrote.
    """
    if isinstance(data, str):
        data = data.encode()
    try:
        with atomic_file(path, mode, exclusive) as f:
            f.write(data)
    except FileExistsError:
        if not exclusive:
            raise
        return False
    return True


def append_line(path: Path, line: str) -> None:
    """Appends one line with a single write(2), then fsyncs: readers see whole lines."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_name(version: int) -> str:
    """The file name of a shard's checkpoint of `version`."""
    return f"ckpt-{version:012d}.ckpt"


def checkpoint_version(path: Path) -> int | None:
    """The version a checkpoint file's name says, or None if it is not a checkpoint's name."""
    m = _CHECKPOINT.match(Path(path).name)
    return int(m.group(1)) if m else None


def checkpoint_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in `directory` (one shard's folder), newest (highest version) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(v, p) for p in directory.iterdir() if (v := checkpoint_version(p)) is not None]
    return [p for _, p in sorted(found, reverse=True)]


def shard_checkpoint_dirs(path: str | os.PathLike[str]) -> dict[int, Path]:
    """{shard index: its checkpoint folder} under a run directory or its checkpoints/."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if not path.is_dir():
        return {}
    found = {
        int(m.group(1)): p
        for p in path.iterdir()
        if p.is_dir() and (m := _SHARD_CHECKPOINTS.match(p.name))
    }
    return dict(sorted(found.items()))


def fsync_dir(path: Path) -> None:
    """Makes a rename or a new file in `path` durable."""
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

    def checkpoint_files(self, shard: int) -> list[Path]:
        """Shard `shard`'s checkpoint files, newest first."""
        return checkpoint_files(self.checkpoints(shard))

    def newest_checkpoint_version(self, shard: int) -> int | None:
        """The highest version among shard `shard`'s checkpoint files (None if none)."""
        files = self.checkpoint_files(shard)
        return checkpoint_version(files[0]) if files else None

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
        token, and only one of several racing starters wins; a reader never sees half a file.
        """
        self.ensure()
        wrote = atomic_write(self.config_path, configuration.to_toml(cfg), exclusive=True)
        self.write_secret()
        return wrote

    def write_secret(self) -> bool:
        """Creates the token file with mode 0600 if it is missing. True if it wrote it."""
        return atomic_write(
            self.secret_path, secrets.token_urlsafe(32) + "\n", mode=0o600, exclusive=True
        )

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

        `stop` may be a threading.Event: when it is set, waiting ends with `Stopped`.
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
                    raise Stopped(f"stopped while waiting for {role}-{index}")
            else:
                time.sleep(poll)

    # -- evaluations ------------------------------------------------------------------------
    @property
    def eval_path(self) -> Path:
        return self.path / "eval.jsonl"

    def append_evaluation(self, record: dict) -> None:
        """Appends one evaluation's record to eval.jsonl (one line, one write, fsynced)."""
        append_line(self.eval_path, json.dumps(record))

    def evaluations(self) -> list[dict]:
        """Every complete record in eval.jsonl, oldest first (none if there is no file).

        A line still being written, or anything that is not a JSON object, is skipped.
        """
        try:
            text = self.eval_path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def last_evaluation(self) -> dict | None:
        """The newest complete record in eval.jsonl, or None."""
        records = self.evaluations()
        return records[-1] if records else None

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
