"""Staleness-aware async updates, measured: several async learners on one game, with and
without `--staleness_aware` (each push's learning rate divided by its staleness, Zhang et
al. 2016, "Staleness-aware Async-SGD").

    .venv/bin/python -m bench.staleness [--learners 4] [--runs 3] [--minutes 4]

Each run is `ba3c train -e CartPole-v1 --model mlp --learners L --pools L --stop-score 195`
(Adam lr 1e-3, the test suite's CartPole settings) in a new run directory; the two settings
alternate, run by run, so that background load hits them alike. From each run's eval.jsonl:
minutes and env frames until the first evaluation (10 episodes) with a mean of 195 or more;
a run that does not get there within --minutes counts as not reaching it. Also the shards'
mean staleness (versions) at the end. Prints medians [min-max] per setting and writes
bench/results/staleness.json. Not part of `make bench` (minutes per run).

CartPole because it learns in about a minute here, so several runs per setting fit; the
Atari comparison needs hours per curve.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ba3c.rundir import RunDir
from bench.common import RESULTS, ROOT, fmt, machine, markdown, spread, write_report
from tests.support import ba3c_command

TARGET = 195.0
CARTPOLE = [
    *("-e", "CartPole-v1", "--model", "mlp", "--optimizer", "adam", "--lr", "0.001"),
    *("--beta1", "0.9", "--beta2", "0.999", "--epsilon", "1e-8", "--grad_clip", "40"),
    *("--batch_size", "64", "--simulator_procs", "8", "--eval_every", "5"),
    *("--eval_episodes", "10", "--save_every", "0", "--plain", "--progress-every", "30"),
]


def one_run(run_dir: Path, learners: int, aware: bool, minutes: float) -> dict:
    flag = "--staleness_aware" if aware else "--no-staleness_aware"
    args = ["train", "--run-dir", str(run_dir), *CARTPOLE, "--learners", str(learners)]
    args += ["--pools", str(learners), flag, "--stop-score", f"{TARGET:g}"]
    args += ["--minutes", f"{minutes:g}"]
    started = time.time()
    done = subprocess.run(ba3c_command(*args), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ba3c train failed ({done.returncode}):\n{done.stdout[-3000:]}")
    evaluations = RunDir(run_dir).evaluations()
    reached = next((e for e in evaluations if e["mean"] >= TARGET), None)
    return {
        "staleness_aware": aware,
        "reached": reached is not None,
        "minutes": round((reached["time"] - started) / 60, 3) if reached else None,
        "env_frames": reached["env_frames"] if reached else None,
        "version": reached["version"] if reached else None,
        "evaluations": len(evaluations),
        "best_mean": max((e["mean"] for e in evaluations), default=None),
    }


def summary(runs: list[dict]) -> dict:
    hit = [r for r in runs if r["reached"]]
    out = {"runs": len(runs), "reached": len(hit)}
    if hit:
        out["minutes"] = spread([r["minutes"] for r in hit])
        out["env_frames"] = spread([r["env_frames"] for r in hit])
        out["version"] = spread([r["version"] for r in hit])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learners", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="Runs per setting.")
    parser.add_argument("--minutes", type=float, default=4.0, help="Longest one run may take.")
    parser.add_argument("--out", type=Path, default=RESULTS / "staleness.json")
    args = parser.parse_args(argv)
    if args.learners < 2 or args.runs < 1 or args.minutes <= 0:
        parser.error("--learners must be >= 2, --runs >= 1, --minutes > 0")
    before = machine()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ba3c-bench-staleness-") as tmp:
        for i in range(args.runs):
            for aware in (False, True):
                run_dir = Path(tmp) / f"run-{i}-{'aware' if aware else 'plain'}"
                result = one_run(run_dir, args.learners, aware, args.minutes)
                print(json.dumps(result), flush=True)
                runs.append(result)
    by = {
        name: summary([r for r in runs if r["staleness_aware"] == aware])
        for name, aware in (("plain", False), ("staleness_aware", True))
    }
    rows = []
    for name, s in by.items():
        rows.append(
            [
                name,
                f"{s['reached']} of {s['runs']}",
                fmt(s["minutes"], 2) if "minutes" in s else "-",
                fmt(s["env_frames"], 0) if "env_frames" in s else "-",
                fmt(s["version"], 0) if "version" in s else "-",
            ]
        )
    print(
        f"\nCartPole-v1, {args.learners} async learners and pools, to an evaluation mean of "
        f"{TARGET:g}; median [min-max] over the runs that got there\n"
    )
    print(markdown(["setting", "reached", "minutes", "env frames", "versions"], rows))
    report = {
        "benchmark": "staleness-aware async updates",
        "learners": args.learners,
        "minutes_limit": args.minutes,
        "machine_before": before,
        "machine_after": machine(),
        "runs": runs,
        "summary": by,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
