"""Recorded evaluation episodes: MP4 files under RUN_DIR/videos/ and which of them to keep.

A `VideoRecorder` streams full-resolution RGB frames straight into ffmpeg (the binary that
imageio-ffmpeg bundles; no system package), so a long Atari episode never sits in memory.
It writes under a hidden temporary name and renames the finished file to its final name,
`eval-v<version>-score<score>.mp4`, so a reader never sees half a video.

`prune` keeps the newest `keep` recordings (by version) plus the best-scoring one, and
never touches files it did not name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

NAME = re.compile(r"^eval-v(?P<version>\d+)-score(?P<score>[-+0-9.eEinfa]+)\.mp4$")


def video_name(version: int, score: float) -> str:
    return f"eval-v{version:09d}-score{score:g}.mp4"


@dataclass(frozen=True)
class Video:
    path: Path
    version: int
    score: float

    @classmethod
    def parse(cls, path: Path) -> Video | None:
        match = NAME.match(path.name)
        if match is None:
            return None
        try:
            return cls(path, int(match["version"]), float(match["score"]))
        except ValueError:
            return None


class VideoRecorder:
    """Writes one episode's frames to an MP4 as they come; `finish` names the file."""

    def __init__(self, folder: Path, fps: float):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.frames = 0
        self._tmp = self.folder / f".recording-{os.getpid()}.mp4"
        self._size: tuple[int, int] | None = None  # (height, width) as written
        self._writer = None

    def add(self, frame: np.ndarray) -> None:
        """Appends an (H, W, 3) uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"a video frame must be (H, W, 3) RGB, got shape {frame.shape}")
        if self._writer is None:
            # yuv420p needs even sides; pad by one row/column rather than rescale
            self._size = (frame.shape[0] + frame.shape[0] % 2, frame.shape[1] + frame.shape[1] % 2)
            self._writer = imageio_ffmpeg.write_frames(
                str(self._tmp),
                (self._size[1], self._size[0]),
                fps=self.fps,
                codec="libx264",
                pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p",
                macro_block_size=1,
                ffmpeg_log_level="error",
            )
            self._writer.send(None)
        self._writer.send(np.ascontiguousarray(_fit(frame, self._size), dtype=np.uint8))
        self.frames += 1

    def finish(self, name: str) -> Path | None:
        """Closes the file and gives it its final name; None if no frame was recorded."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        final = self.folder / name
        os.replace(self._tmp, final)
        return final

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pads (edge) or crops `frame` to `size` = (height, width)."""
    frame = frame[: size[0], : size[1]]
    pad_h, pad_w = size[0] - frame.shape[0], size[1] - frame.shape[1]
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def recordings(folder: Path) -> list[Video]:
    """The evaluator's videos in `folder`, newest (highest version) first."""
    found = [v for p in Path(folder).glob("eval-v*.mp4") if (v := Video.parse(p)) is not None]
    return sorted(found, key=lambda v: (v.version, v.path.stat().st_mtime), reverse=True)


def prune(folder: Path, keep: int) -> list[Path]:
    """Deletes all but the newest `keep` videos and the best one; returns what it deleted."""
    videos = recordings(folder)
    if not videos:
        return []
    kept = set(v.path for v in videos[: max(0, keep)])
    kept.add(max(videos, key=lambda v: (v.score, v.version)).path)
    deleted = []
    for v in videos:
        if v.path not in kept:
            v.path.unlink(missing_ok=True)
            deleted.append(v.path)
    return deleted
