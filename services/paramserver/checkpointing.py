"""Writes a shard's checkpoints in the background, and restores the newest good one.

The shard hands over a copy of its state every `save_every` versions; a thread writes it
(ba3c/checkpoint.py: atomic, checksummed, newest `keep_checkpoints` kept) so pushes never
wait for the disk. If a new snapshot arrives while one is being written, only the newest
pending one is kept. A failed write is logged and retried with the next snapshot: losing
a checkpoint must not stop training.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from ba3c import checkpoint
from ba3c.checkpoint import Checkpoint
from services.paramserver import metrics

log = structlog.get_logger()


def restore_newest(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies; damaged ones are logged and renamed *.corrupt."""
    for tmp in directory.glob(".ckpt-*.tmp") if directory.is_dir() else ():
        tmp.unlink(missing_ok=True)  # left by a crash while writing

    def report(path: Path, error: checkpoint.CheckpointError) -> None:
        log.warning(
            "skipping damaged checkpoint",
            path=str(path),
            error=str(error),
            renamed_to=str(path) + ".corrupt",
        )

    return checkpoint.newest(directory, on_corrupt=report, quarantine=True)


class CheckpointWriter:
    """One background thread that writes submitted snapshots, newest first."""

    def __init__(self, directory: Path, keep: int, on_written=None):
        self.directory = directory
        self.keep = keep
        self._on_written = on_written
        self._cond = threading.Condition()
        self._pending: Checkpoint | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, ckpt: Checkpoint) -> None:
        with self._cond:
            self._pending = ckpt
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                ckpt, self._pending, self._busy = self._pending, None, True
            try:
                self.write(ckpt)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def write(self, ckpt: Checkpoint) -> Path | None:
        """Writes one checkpoint now (in the calling thread); None if it failed."""
        start = time.perf_counter()
        try:
            path = checkpoint.save(self.directory, ckpt, keep=self.keep)
        except OSError as e:
            log.error("checkpoint write failed", version=ckpt.version, error=str(e))
            return None
        seconds = time.perf_counter() - start
        metrics.CHECKPOINT_SECONDS.observe(seconds)
        log.info(
            "checkpoint written", path=str(path), version=ckpt.version, seconds=round(seconds, 3)
        )
        if self._on_written is not None:
            self._on_written(ckpt.version)
        return path

    def close(self) -> None:
        """Writes what is pending, then stops the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
