"""Parameter-server checkpoints: the file format, writing, verifying, and reading a run back.

Who uses it:
- each parameter-server shard writes its checkpoints here (`save`) and restores the newest
  one that verifies when it starts (`newest`);
- the evaluator's offline mode (`ba3c evaluate --checkpoint PATH`, on a laptop, no cluster)
  calls `load_run_parameters(PATH)`, which accepts a run directory, its `checkpoints/`
  folder, one shard's folder (`checkpoints/paramserver-K`) or one checkpoint file, and returns
  `(pieces, version, env_frames)`: `pieces` maps piece names as in ba3c/sharding.py
  ("conv1/kernel", "fc/kernel#0/2", ...) to float32 arrays, merged over the newest good
  checkpoint of every shard. Turn them into whole variables with
  `sharding.Assignment(variables, num_shards, splits).join(pieces)` using the run's
  config.toml (`ps`, `fc_splits`). `version` is the smallest version among the shards read
  and `env_frames` the largest frame counter (every shard counts all frames).
  Raises `CheckpointError` (a ValueError) with a message a person can act on when nothing
  usable is found. numpy only: no TensorFlow, no gRPC.

Layout on disk: RUN_DIR/checkpoints/paramserver-K/ckpt-<version, 12 digits>.ckpt, the newest
`keep` kept. One file:

    b"BA3CCKPT"                    8 bytes, magic
    header length                  8 bytes, unsigned little-endian
    header                         UTF-8 JSON: format, shard, version, env_frames,
                                   optimizer {name, step}, extra {...}, created,
                                   arrays [{name, slot, dtype, shape, offset, nbytes}]
    array data                     raw little-endian C-order bytes, at header offsets
    SHA-256                        32 bytes, of everything before it

Parameters have `slot` null; optimizer state (Adam's "m" and "v", RMSProp's "velocity")
names its slot. A file is written to a temporary name, fsynced, renamed into place and the
folder fsynced, so a crash leaves the old file or the new one, never half of one; a file
that was damaged anyway (truncated disk, copied half-way) fails the checksum and is skipped.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ba3c.rundir import atomic_file, checkpoint_files, checkpoint_name, shard_checkpoint_dirs

MAGIC = b"BA3CCKPT"
FORMAT = 1
_DIGEST = 32


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or found; the message says which and why."""


@dataclass
class Checkpoint:
    """Everything a shard needs to resume: parameters, optimizer state, counters."""

    shard: int
    version: int
    env_frames: int
    parameters: dict[str, np.ndarray]
    optimizer: str = ""
    optimizer_step: int = 0
    slots: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


# The names are the run directory's (ba3c/rundir.py); these are the names used here.
file_name = checkpoint_name
list_files = checkpoint_files
shard_directories = shard_checkpoint_dirs


def _arrays(ckpt: Checkpoint) -> list[tuple[str, str | None, np.ndarray]]:
    out = [(name, None, a) for name, a in ckpt.parameters.items()]
    for slot, arrays in ckpt.slots.items():
        out += [(name, slot, a) for name, a in arrays.items()]
    return out


def save(directory: str | os.PathLike[str], ckpt: Checkpoint, keep: int = 3) -> Path:
    """Writes `ckpt` atomically into `directory`, then deletes all but the newest `keep`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays, entries, offset = [], [], 0
    for name, slot, array in _arrays(ckpt):
        array = np.require(array, dtype="<f4", requirements="C")
        entries.append(
            {
                "name": name,
                "slot": slot,
                "dtype": "<f4",
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": array.nbytes,
            }
        )
        arrays.append(array)
        offset += array.nbytes
    header = json.dumps(
        {
            "format": FORMAT,
            "shard": ckpt.shard,
            "version": ckpt.version,
            "env_frames": ckpt.env_frames,
            "optimizer": {"name": ckpt.optimizer, "step": ckpt.optimizer_step},
            "extra": ckpt.extra,
            "arrays": entries,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    ).encode()
    target = directory / file_name(ckpt.version)
    with atomic_file(target) as f:
        digest = hashlib.sha256()
        for chunk in (
            MAGIC,
            struct.pack("<Q", len(header)),
            header,
            *(memoryview(a.reshape(-1).view(np.uint8)) for a in arrays),
        ):
            digest.update(chunk)
            f.write(chunk)
        f.write(digest.digest())
    for old in list_files(directory)[max(1, keep) :]:
        old.unlink(missing_ok=True)
    return target


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Reads and verifies one checkpoint file; raises CheckpointError if it is damaged.
    The arrays are writable and share one buffer."""
    path = Path(path)
    try:
        size = path.stat().st_size
        buf = bytearray(size)
        with open(path, "rb") as f:
            got = f.readinto(buf)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if got != size or size < len(MAGIC) + 8 + _DIGEST or bytes(buf[: len(MAGIC)]) != MAGIC:
        raise CheckpointError(f"{path}: not a ba3c checkpoint (bad magic or too short)")
    view = memoryview(buf)
    if hashlib.sha256(view[:-_DIGEST]).digest() != bytes(view[-_DIGEST:]):
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted file)")
    (header_len,) = struct.unpack_from("<Q", buf, len(MAGIC))
    start = len(MAGIC) + 8
    try:
        header = json.loads(bytes(view[start : start + header_len]))
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable header: {e}") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {header.get('format')} is not {FORMAT}")
    data_start, data_stop = start + header_len, size - _DIGEST
    params: dict[str, np.ndarray] = {}
    slots: dict[str, dict[str, np.ndarray]] = {}
    for e in header["arrays"]:
        begin = data_start + e["offset"]
        if begin + e["nbytes"] > data_stop:
            raise CheckpointError(f"{path}: array {e['name']!r} lies outside the file")
        array = np.frombuffer(buf, dtype=e["dtype"], count=e["nbytes"] // 4, offset=begin)
        array = array.reshape(e["shape"])
        (params if e["slot"] is None else slots.setdefault(e["slot"], {}))[e["name"]] = array
    opt = header.get("optimizer") or {}
    return Checkpoint(
        shard=int(header["shard"]),
        version=int(header["version"]),
        env_frames=int(header["env_frames"]),
        parameters=params,
        optimizer=opt.get("name", ""),
        optimizer_step=int(opt.get("step", 0)),
        slots=slots,
        extra=header.get("extra") or {},
        path=path,
    )


def newest(
    directory: str | os.PathLike[str],
    on_corrupt: Callable[[Path, CheckpointError], None] | None = None,
    quarantine: bool = False,
) -> Checkpoint | None:
    """The newest checkpoint in `directory` that verifies, or None if there is none.

    Damaged files are reported to `on_corrupt` and skipped; with `quarantine` they are
    renamed to NAME.corrupt so that they are never read (or counted as newest) again.
    """
    for path in list_files(directory):
        try:
            return read(path)
        except CheckpointError as e:
            if on_corrupt is not None:
                on_corrupt(path, e)
            if quarantine:
                path.replace(path.with_name(path.name + ".corrupt"))
    return None


def load_run_parameters(
    path: str | os.PathLike[str],
    on_corrupt: Callable[[Path, CheckpointError], None] | None = None,
) -> tuple[dict[str, np.ndarray], int, int]:
    """(pieces, version, env_frames) from the newest good checkpoint of every shard.

    `path` may be a run directory, its checkpoints/ folder, one shard's folder, or one
    checkpoint file. See the module docstring for what the values mean.
    """
    path = Path(path)
    if path.is_file():
        found = [read(path)]
    else:
        shards = shard_directories(path) or ({0: path} if list_files(path) else {})
        if not shards:
            raise CheckpointError(
                f"no checkpoints under {path} (expected a run directory, "
                "its checkpoints/ folder, a paramserver-K folder or a file)"
            )
        found = []
        for index, folder in shards.items():
            ckpt = newest(folder, on_corrupt)
            if ckpt is None:
                raise CheckpointError(f"shard {index}: no readable checkpoint in {folder}")
            found.append(ckpt)
    pieces: dict[str, np.ndarray] = {}
    for ckpt in found:
        for name, array in ckpt.parameters.items():
            if name in pieces:
                raise CheckpointError(f"variable {name!r} is in more than one shard's checkpoint")
            pieces[name] = array
    version = min(c.version for c in found)
    env_frames = max(c.env_frames for c in found)
    return pieces, version, env_frames
