"""Learning speed: evaluation score against environment frames and wall-clock of a real run.

    .venv/bin/python -m bench.learning --env PongNoFrameskip-v4 --minutes 60 [-- TRAIN FLAGS]
    .venv/bin/python -m bench.learning --from-run runs/RUN_DIR      (summarise a finished run)

Runs `ba3c train --minutes M -e ENV --plain` (any flags after `--` are passed on, e.g.
`-- --pools 2 --eval_every 120`) in a new run directory (kept, under runs/ unless
--run-dir says otherwise), then reads RUN_DIR/eval.jsonl, which the evaluator appends one
line to per evaluation, and writes the curve (minutes, frames, version, mean score with
min/max over the evaluation's episodes) to bench/results/learning.json with the machine's
cores and load. Frames are environment frames (agent steps x frame_skip), the unit of
published Atari curves (the A3C paper, Mnih et al. 2016, plots score against frames), so
a long run can be laid over them. Not part of `make bench` (minutes to hours).

`--plot PNG` also draws the curve (score against env frames and against minutes) with the
published references for the game, where REFERENCES has them (matplotlib: `ba3c[report]`);
the summary quotes them at the run's last evaluation and says whether the run met the
game's target in TARGETS (Pong above 0 within 90 minutes, Breakout 50 or more within 60).
`--also-run RUN_DIR` (repeatable) lays other finished runs of the same game beside it: each
is drawn as its own curve and gets its own target line, so that one figure shows every run
a target was judged on.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ba3c.rundir import RunDir
from bench.common import RESULTS, ROOT, machine, markdown, write_report
from tests.support import ba3c_command


def read_curve(run_dir: Path, started: float) -> list[dict]:
    """One point per complete line of RUN_DIR/eval.jsonl; `started` is the run's start
    (Unix seconds)."""
    points = []
    for record in RunDir(run_dir).evaluations():
        points.append(
            {
                "minutes": round((record["time"] - started) / 60, 3),
                "env_frames": record["env_frames"],
                "version": record["version"],
                "mean": record["mean"],
                "min": record["min"],
                "max": record["max"],
                "episodes": record["episodes"],
            }
        )
    return points


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def train(args: argparse.Namespace, extra: list[str]) -> tuple[Path, float, int]:
    """Runs `ba3c train`; returns its run directory, start time and exit code."""
    run_dir = args.run_dir or ROOT / "runs" / f"bench-learning-{datetime.now():%Y%m%d-%H%M%S}"
    train_args = [
        "train",
        "--run-dir",
        str(run_dir),
        "--plain",
        "-e",
        args.env,
        "--minutes",
        f"{args.minutes:g}",
        *extra,
    ]
    print("running: ba3c", " ".join(train_args), flush=True)
    command = ba3c_command(*train_args)
    started = time.time()
    proc = subprocess.Popen(command, cwd=ROOT)
    # Ctrl-C and `kill` both stop the run and still record its curve. Both handlers are set
    # here because a shell starts background commands (`... &`) with SIGINT ignored, and
    # Python then raises nothing for it.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _interrupt)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # `ba3c train` stops in order on SIGINT (it gets it too from a terminal; pass it on
        # in case it was sent to us alone)
        print("\ninterrupted: stopping the run, then recording its curve so far", flush=True)
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
    return Path(run_dir), started, code


def _started(run_dir: Path) -> float:
    """When a finished run began (Unix seconds): its config.toml is written first."""
    return (run_dir / "config.toml").stat().st_mtime


def _env_of(run_dir: Path) -> str:
    from ba3c import config as configuration

    return configuration.load(run_dir / "config.toml", environ={}).run.env


def table(points: list[dict]) -> str:
    return markdown(
        ["minutes", "env frames", "version", "mean score [min-max]", "episodes"],
        [
            [
                f"{p['minutes']:.1f}",
                f"{p['env_frames']:,}",
                p["version"],
                f"{p['mean']:.1f} [{p['min']:.0f}-{p['max']:.0f}]",
                p["episodes"],
            ]
            for p in points
        ],
    )


# Published scores to lay a curve over: (label, [(env frames, mean score), ...], the +- of a
# single final score or None). Frames are 4 x the agent steps these sources count.
# - RL Zoo's A2C (stable-baselines3, hyperparams/a2c.yml: 16 envs, 5 steps, RMSprop-TF lr
#   7e-4, 10M agent steps), its final score as its model cards on huggingface.co/sb3 report it.
# - RLlib's published runs (github.com/ray-project/rl-experiments): A2C on Breakout (5 workers
#   x 5 envs, RMSProp lr 7e-4; atari-a2c/, commit d67bd82) and IMPALA on Pong (32 workers x 5
#   envs, lr 5e-4, batch 1000, a 42x42 network tuned for wall-clock; pong-speedrun/
#   pong-impala-lowlatency-32, commit b58bd84): episode_reward_mean (sampled actions, whole
#   games) read from each run's progress.csv at the first row past each point.
REFERENCES: dict[str, list[tuple[str, list[tuple[float, float]], float | None]]] = {
    "PongNoFrameskip-v4": [
        ("RL Zoo A2C, final (sb3/a2c-PongNoFrameskip-v4)", [(40e6, 17.1)], 2.7),
        (
            "RLlib IMPALA, 32 workers (rl-experiments)",
            [
                (1e6, -20.4),
                (2e6, -20.2),
                (4e6, -20.2),
                (6e6, -19.8),
                (8e6, -19.2),
                (10e6, -18.4),
                (12e6, -15.3),
                (14e6, -9.4),
                (16e6, 14.1),
                (20e6, 18.2),
                (24e6, 18.2),
            ],
            None,
        ),
    ],
    "BreakoutNoFrameskip-v4": [
        ("RL Zoo A2C, final (sb3/a2c-BreakoutNoFrameskip-v4)", [(40e6, 349.5)], 89.7),
        (
            "RLlib A2C, 5x5 envs (rl-experiments)",
            [
                (1e6, 8.8),
                (2e6, 14.9),
                (4e6, 23.3),
                (6e6, 46.2),
                (8e6, 74.7),
                (10e6, 137.5),
                (12e6, 176.3),
                (14e6, 243.9),
                (16e6, 293.6),
                (20e6, 302.6),
                (24e6, 334.1),
                (32e6, 370.2),
                (40e6, 376.6),
            ],
            None,
        ),
    ],
}


@dataclass(frozen=True)
class Target:
    """A score an evaluation mean must pass within so many minutes of a run."""

    score: float
    strict: bool  # above `score` (True) or at least `score`
    minutes: float

    def describe(self) -> str:
        how = "above" if self.strict else "at least"
        return f"{how} {self.score:g} within {self.minutes:g} minutes"

    def reached(self, mean: float) -> bool:
        return mean > self.score if self.strict else mean >= self.score


# Issue 18's targets for the defaults on a 2-core machine (each to be met in two runs).
TARGETS = {
    "PongNoFrameskip-v4": Target(0.0, strict=True, minutes=90.0),
    "BreakoutNoFrameskip-v4": Target(50.0, strict=False, minutes=60.0),
}


def first_reaching(points: list[dict], target: Target) -> dict | None:
    """The first evaluation whose mean reaches `target`, whenever it came."""
    return next((p for p in points if target.reached(p["mean"])), None)


def target_verdict(points: list[dict], target: Target) -> tuple[bool, str]:
    """(met, one line saying when it was reached or how close the run came)."""
    first = first_reaching(points, target)
    met = first is not None and first["minutes"] <= target.minutes
    if first is not None:
        when = (
            f"first at {first['minutes']:.1f} min, {first['env_frames'] / 1e6:.2f}M frames "
            f"({first['mean']:g})"
        )
    else:
        when = f"best {max((p['mean'] for p in points), default=float('nan')):g}"
    return met, f"target: {target.describe()}: {'met' if met else 'MISSED'}, {when}"


def reference_at(env: str, frames: float) -> list[tuple[str, float]]:
    """Each reference curve's score at `frames` (linear between its points; None past its
    ends), for a table beside a run's own score."""
    out = []
    for label, points, _ in REFERENCES.get(env, []):
        if len(points) < 2 or not points[0][0] <= frames <= points[-1][0]:
            continue
        for (f0, s0), (f1, s1) in zip(points, points[1:], strict=False):
            if f0 <= frames <= f1:
                out.append((label, s0 + (s1 - s0) * (frames - f0) / (f1 - f0)))
                break
    return out


def plot(runs: list[tuple[str, list[dict]]], env: str, title: str, path: Path) -> None:
    """Two small panels: evaluation score (mean, min-max band) against env frames, with
    the references for `env`, and against minutes; one curve per (label, points) run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_frames, by_minutes) = plt.subplots(1, 2, figsize=(9.0, 3.4), dpi=90, sharey=True)
    for i, (name, points) in enumerate(runs):
        frames = [p["env_frames"] / 1e6 for p in points]
        minutes = [p["minutes"] for p in points]
        mean = [p["mean"] for p in points]
        low, high = [p["min"] for p in points], [p["max"] for p in points]
        alone = len(runs) == 1
        label = "evaluation mean" if alone else f"{name}: evaluation mean"
        band = "evaluation min-max" if alone else None
        for ax, x in ((by_frames, frames), (by_minutes, minutes)):
            ax.fill_between(x, low, high, alpha=0.2 if alone else 0.1, color=f"C{i}", label=band)
            ax.plot(x, mean, marker=".", color=f"C{i}", label=label)
    for ax, label in ((by_frames, "env frames (M)"), (by_minutes, "minutes")):
        ax.set(xlabel=label, ylabel="score")
        ax.grid(alpha=0.3)
    for label, ref, spread in REFERENCES.get(env, []):
        x, y = [f / 1e6 for f, _ in ref], [score for _, score in ref]
        if len(ref) == 1:
            by_frames.errorbar(x, y, yerr=[spread], fmt="s", color="black", label=label)
        else:
            by_frames.plot(x, y, "--", color="gray", linewidth=1, label=label)
    by_frames.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="PongNoFrameskip-v4")
    parser.add_argument("--minutes", type=float, help="How long `ba3c train` runs.")
    parser.add_argument("--run-dir", type=Path, help="Where the run lives (new directory).")
    parser.add_argument(
        "--from-run",
        type=Path,
        metavar="RUN_DIR",
        help="Do not train: summarise this run's eval.jsonl.",
    )
    parser.add_argument(
        "--also-run",
        type=Path,
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="Another finished run of the same game to draw and judge beside it (repeatable).",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "learning.json")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="Also draw the curve here.")
    parser.add_argument("--title", default="", help="The plot's title (default: the run).")
    args = parser.parse_args(ours)
    if args.from_run is None and (args.minutes is None or args.minutes <= 0):
        parser.error("--minutes must be > 0 (or give --from-run RUN_DIR)")
    if args.from_run is not None and not (args.from_run / "config.toml").exists():
        parser.error(f"--from-run: {args.from_run} is not a run directory (no config.toml)")
    game = args.env if args.from_run is None else _env_of(args.from_run)
    for other in args.also_run:
        if not (other / "config.toml").exists():
            parser.error(f"--also-run: {other} is not a run directory (no config.toml)")
        other_env = _env_of(other)
        if other_env != game:
            parser.error(f"--also-run: {other} ran {other_env}, not {game}")

    before = machine()
    if args.from_run is not None:
        run_dir, code = args.from_run, 0
        started = _started(run_dir)
    else:
        run_dir, started, code = train(args, extra)
    points = read_curve(run_dir, started)
    print(
        f"\n{args.env if args.from_run is None else run_dir}: evaluation score against "
        "wall-clock and environment frames\n"
    )
    print(table(points) if points else "(no evaluation finished: eval.jsonl is empty)")
    env = game
    at_last = reference_at(env, points[-1]["env_frames"]) if points else []
    for label, score in at_last:
        print(
            f"at the last evaluation's {points[-1]['env_frames'] / 1e6:.1f}M frames: "
            f"{points[-1]['mean']:.1f} here, {score:.1f} for {label}"
        )
    target = TARGETS.get(env)
    met = None
    if target is not None and points:
        met, line = target_verdict(points, target)
        print(line)
    also = []
    for other in args.also_run:
        other_points = read_curve(other, _started(other))
        other_met = None
        if target is not None and other_points:
            other_met, line = target_verdict(other_points, target)
            print(f"{other.name}: {line}")
        also.append({"run_dir": str(other), "curve": other_points, "target_met": other_met})
    report = {
        "benchmark": "learning speed",
        "env": args.env if args.from_run is None else None,
        "minutes": args.minutes,
        "run_dir": str(run_dir),
        "train_flags": extra,
        "train_exit_code": code,
        "machine_before": before,
        "machine_after": machine(),
        "curve": points,
        "best_mean": max((p["mean"] for p in points), default=None),
        "final_mean": points[-1]["mean"] if points else None,
        "references_at_final_frames": dict(at_last),
        "target": None if target is None else {"describe": target.describe(), "met": met},
        "also": also,
    }
    write_report(args.out, report)
    if args.plot is not None and points:
        runs = [(run_dir.name, points)] + [(Path(a["run_dir"]).name, a["curve"]) for a in also]
        plot(runs, env, args.title or f"{env}: {run_dir.name}", args.plot)
        print(f"wrote {args.plot}")
    return code


if __name__ == "__main__":
    sys.exit(main())
