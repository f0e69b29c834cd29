"""The learner's frame stacking (services/learner/stacker.py), timed per request: the
stacker as it is against the slice copy it replaced (`out[..., :-c] = last[..., c:]`, kept
here as the baseline), alternated run by run.

    .venv/bin/python -m bench.stacker [--envs 8] [--calls 300] [--repeats 9]

Random uint8 Atari frames [envs, 84, 84, 1] stacked 4 deep, the shape one request of a
double-buffered pool of 16 environments brings; the handed-out arrays are kept alive (the
last 100) as the learner's memory keeps them. Prints microseconds per call, medians
[min-max], and their ratio; writes bench/results/stacker.json. Seconds; not in `make bench`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bench.common import RESULTS, fmt, machine, spread, write_report
from services.learner.stacker import FrameStacker

SHAPE, K = (84, 84, 4), 4


class SliceCopyStacker(FrameStacker):
    """The stacker before 2026-12-02: each pixel's older frames copied as a strided slice."""

    def next(self, frames: np.ndarray, reset: Iterable[int] = ()) -> np.ndarray:
        if self._last is None:
            return self.first(frames)
        c = self.channels
        out = np.empty(self.full_shape, frames.dtype)
        out[..., :-c] = self._last[..., c:]
        out[..., -c:] = frames
        for i in reset:
            out[i, ..., :-c] = 0
        self._last = out
        return out


def per_call_us(cls: type[FrameStacker], frames: list[np.ndarray], calls: int) -> float:
    stacker = cls(len(frames[0]), SHAPE, K)
    stacker.first(frames[0])
    kept: list[np.ndarray] = []
    started = time.perf_counter()
    for i in range(calls):
        kept.append(stacker.next(frames[i % len(frames)]))
        if len(kept) > 100:
            kept.pop(0)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=8, help="Environments per request.")
    parser.add_argument("--calls", type=int, default=300, help="Calls per timed run.")
    parser.add_argument("--repeats", type=int, default=9, help="Timed runs per stacker.")
    parser.add_argument("--out", type=Path, default=RESULTS / "stacker.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.envs, *SHAPE[:-1], 1), np.uint8) for _ in range(8)]
    now: list[float] = []
    before: list[float] = []
    for _ in range(args.repeats):
        now.append(per_call_us(FrameStacker, frames, args.calls))
        before.append(per_call_us(SliceCopyStacker, frames, args.calls))
    report = {
        "machine": machine(),
        "envs": args.envs,
        "now_us": spread(now),
        "slice_copy_us": spread(before),
        "ratio": spread(now)["median"] / spread(before)["median"],
    }
    print(
        f"stacking [{args.envs}, 84, 84, 4] uint8: now {fmt(report['now_us'])} us, "
        f"slice copy {fmt(report['slice_copy_us'])} us, ratio {report['ratio']:.2f}"
    )
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
