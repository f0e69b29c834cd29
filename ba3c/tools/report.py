"""`ba3c report`: the main figures of a run as PNG files, with no server running.

    ba3c report --run-dir runs/ba3c-20261125-101500        -> RUN_DIR/report/*.png

Reads what the services leave in the run directory: the learners' TensorBoard events
(RUN_DIR/tensorboard/learner-I/: `train/<part>` by version, `online/return_mean` by env
frames), the evaluator's (RUN_DIR/tensorboard/eval/: `eval/score_*` and `eval/env_frames`
by version) and RUN_DIR/eval.jsonl, and draws:

    score.png    evaluation score (mean, min-max band) and online return against env frames
    speed.png    environment frames per second against wall time
    losses.png   loss parts, policy entropy and gradient norm against version

Event files are read with TensorBoard's protobufs and a small TFRecord reader, so neither
TensorFlow nor a TensorBoard server is needed; matplotlib is (`pip install 'ba3c[report]'`).
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ba3c.rundir import RunDir

INSTALL_HINT = "pip install 'ba3c[report]'  (matplotlib and tensorboard)"
FIGSIZE = (10.0, 6.0)  # inches; at DPI this is the PNG's size in pixels
DPI = 100
ONLINE_RETURN = "online/return_mean"
LOSS_TAGS = ("train/total", "train/policy", "train/value", "train/entropy", "train/grad_norm")
EVAL_MEAN, EVAL_MIN, EVAL_MAX, EVAL_FRAMES = (
    "eval/score_mean",
    "eval/score_min",
    "eval/score_max",
    "eval/env_frames",
)


class ReportError(RuntimeError):
    """Nothing to plot, or nothing to plot with; the message says what to do."""


@dataclass
class Point:
    step: int
    wall_time: float
    value: float


@dataclass
class Scalars:
    """The scalars of one TensorBoard folder: tag -> points sorted by wall time."""

    by_tag: dict[str, list[Point]] = field(default_factory=lambda: defaultdict(list))

    def get(self, tag: str) -> list[Point]:
        return self.by_tag.get(tag, [])


def tfrecords(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file; stops quietly at a record still being written."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)  # uint64 length, uint32 masked CRC of the length
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:  # data, uint32 masked CRC of data
                return
            yield data


def read_scalars(folder: Path) -> Scalars:
    """Every scalar in the event files of `folder` (simple values and scalar tensors)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    scalars = Scalars()
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for record in tfrecords(path):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    number = float(value.simple_value)
                elif kind == "tensor":
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.size != 1:
                        continue
                    number = float(array.reshape(()))
                else:
                    continue
                scalars.by_tag[value.tag].append(Point(event.step, event.wall_time, number))
    for points in scalars.by_tag.values():
        points.sort(key=lambda p: p.wall_time)
    return scalars


@dataclass
class RunData:
    learners: dict[str, Scalars]  # "learner-0" -> its scalars
    evaluator: Scalars
    evaluations: list[dict]

    def empty(self) -> bool:
        return (
            not self.evaluations
            and not self.evaluator.by_tag
            and not any(s.by_tag for s in self.learners.values())
        )


def load_run(run_dir: Path) -> RunData:
    tensorboard = Path(run_dir) / "tensorboard"
    learners = {
        d.name: read_scalars(d) for d in sorted(tensorboard.glob("learner-*")) if d.is_dir()
    }
    return RunData(
        learners=learners,
        evaluator=read_scalars(tensorboard / "eval"),
        evaluations=[
            r for r in RunDir(run_dir).evaluations() if {"mean", "env_frames"} <= r.keys()
        ],
    )


def evaluation_curve(data: RunData) -> list[tuple[float, float, float, float]]:
    """(env_frames, mean, min, max) per evaluation, from eval.jsonl or else the events."""
    if data.evaluations:
        return sorted(
            (
                float(r["env_frames"]),
                float(r["mean"]),
                float(r.get("min", r["mean"])),
                float(r.get("max", r["mean"])),
            )
            for r in data.evaluations
        )
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    for tag in (EVAL_MEAN, EVAL_MIN, EVAL_MAX, EVAL_FRAMES):
        for p in data.evaluator.get(tag):
            by_step[p.step][tag] = p.value
    return sorted(
        (v[EVAL_FRAMES], v[EVAL_MEAN], v.get(EVAL_MIN, v[EVAL_MEAN]), v.get(EVAL_MAX, v[EVAL_MEAN]))
        for v in by_step.values()
        if EVAL_FRAMES in v and EVAL_MEAN in v
    )


def frame_rates(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(times, frames/s) between consecutive (wall_time, env_frames) points."""
    times, rates = [], []
    for (t0, f0), (t1, f1) in zip(points, points[1:], strict=False):
        if t1 > t0 and f1 >= f0:
            times.append(t1)
            rates.append((f1 - f0) / (t1 - t0))
    return times, rates


def _no_data(ax, what: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no {what} in this run yet",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="gray",
    )


def plot_score(data: RunData, plt, path: Path) -> None:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    curve = evaluation_curve(data)
    drawn = False
    if curve:
        frames, mean, low, high = zip(*curve, strict=True)
        ax.fill_between(frames, low, high, alpha=0.2, label="evaluation min-max")
        ax.plot(frames, mean, marker="o", label="evaluation mean")
        drawn = True
    for name, scalars in data.learners.items():
        points = scalars.get(ONLINE_RETURN)
        if points:
            ax.plot(
                [p.step for p in points],
                [p.value for p in points],
                alpha=0.7,
                label=f"online return ({name})",
            )
            drawn = True
    if drawn:
        ax.legend(loc="best")
    else:
        _no_data(ax, "scores")
    ax.set(title="Score", xlabel="environment frames", ylabel="score")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_speed(data: RunData, plt, path: Path) -> None:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    series: dict[str, list[tuple[float, float]]] = {}
    for name, scalars in data.learners.items():
        series[name] = [(p.wall_time, float(p.step)) for p in scalars.get(ONLINE_RETURN)]
    if data.evaluations:
        series["all (evaluations)"] = sorted(
            (float(r["time"]), float(r["env_frames"])) for r in data.evaluations if "time" in r
        )
    else:
        series["all (evaluations)"] = [
            (p.wall_time, p.value) for p in data.evaluator.get(EVAL_FRAMES)
        ]
    starts = [pts[0][0] for pts in series.values() if pts]
    drawn = False
    for name, points in series.items():
        times, rates = frame_rates(points)
        if rates:
            ax.plot([(t - min(starts)) / 60 for t in times], rates, marker=".", label=name)
            drawn = True
    if drawn:
        ax.legend(loc="best")
    else:
        _no_data(ax, "frame counts")
    ax.set(title="Environment frames per second", xlabel="minutes since start", ylabel="frames/s")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_losses(data: RunData, plt, path: Path) -> None:
    fig, axes = plt.subplots(len(LOSS_TAGS), 1, sharex=True, figsize=FIGSIZE, dpi=DPI)
    for ax, tag in zip(axes, LOSS_TAGS, strict=True):
        drawn = False
        for name, scalars in data.learners.items():
            points = sorted(scalars.get(tag), key=lambda p: p.step)
            if points:
                ax.plot([p.step for p in points], [p.value for p in points], label=name)
                drawn = True
        if not drawn:
            _no_data(ax, tag)
        ax.set_ylabel(tag.split("/", 1)[1], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_title("Training (per learner)")
    axes[-1].set_xlabel("version (global step)")
    if any(data.learners.values()):
        axes[0].legend(loc="best", fontsize=7)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


PLOTS = {"score.png": plot_score, "speed.png": plot_speed, "losses.png": plot_losses}


def import_pyplot():
    try:
        import matplotlib
        import tensorboard  # noqa: F401 - the event protobufs
    except ModuleNotFoundError as e:
        raise ReportError(
            f"`ba3c report` needs {e.name}, which is not installed; {INSTALL_HINT}"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(run_dir: Path, out_dir: Path) -> list[Path]:
    """Draws every plot of the run into `out_dir`; returns the files written."""
    plt = import_pyplot()
    data = load_run(run_dir)
    if data.empty():
        raise ReportError(
            f"nothing to plot: no TensorBoard scalars under "
            f"{Path(run_dir) / 'tensorboard'} and no {Path(run_dir) / 'eval.jsonl'}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in PLOTS.items():
        plot(data, plt, out_dir / name)
        written.append(out_dir / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ba3c report",
        description="Plot a run's scores, frames per second and losses to PNG files, from "
        "its TensorBoard events and eval.jsonl.",
    )
    parser.add_argument("--run-dir", required=True, help="The run directory.")
    parser.add_argument("--out", help="Folder for the PNG files (default: RUN_DIR/report/).")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        parser.exit(2, f"ba3c report: error: run directory {run_dir} does not exist\n")
    out_dir = Path(args.out) if args.out else run_dir / "report"
    try:
        written = write_report(run_dir, out_dir)
    except ReportError as e:
        print(f"ba3c report: error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
