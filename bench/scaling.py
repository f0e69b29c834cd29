"""Scaling benchmark: one Breakout configuration with 1, 2, 4 and 8 learner+pool pairs.

For each count N in `--pairs`, one run of real processes on this machine: N paramserver
shards (the fc kernel split N ways), N learners and N simulator pools (pool i streams to
learner i), no evaluator, asynchronous updates. Over `--windows` windows after every
learner trained: the agent steps/s of all learners together (the sum of their
ba3c_learner_agent_steps_total rates), and the speedup over one pair. `--rounds` repeats
the whole sweep so that drifting load weighs on every count alike.

On this 2-core machine the table only shows the ceiling of two cores (the speedup stays near
1 or falls as processes contend); on a node with 16 cores and more it shows how ba3c
scales within one machine. Prints a Markdown table; writes bench/results/scaling.json.

    .venv/bin/python -m bench.scaling [--pairs 1 2 4 8] [--seconds 30] [--windows 3]
    .venv/bin/python -m bench.scaling --pairs 1 2 --seconds 4 --windows 2 --envs 4 -b 16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, fmt, machine, markdown, spread, window_rates
from tests.support import Process, ba3c_command, make_run_dir, wait_for
from tests.support.metrics import scrape

STEPS = "ba3c_learner_agent_steps_total"


def agent_steps(run_dir, learners: int) -> float:
    return sum(scrape(run_dir, "learner", i).value(STEPS) for i in range(learners))


def measure(pairs: int, args: argparse.Namespace, workdir: Path) -> list[float]:
    """Agent steps/s of all learners together, one value per window."""
    run_dir = make_run_dir(
        workdir / "run",
        env=args.env,
        ps=pairs,
        fc_splits=pairs,
        learners=pairs,
        pools=pairs,
        simulator_procs=args.envs,
        batch_size=args.batch_size,
        eval_node=False,
    )
    started: list[Process] = []
    try:
        for role in ("paramserver", "learner", "simulator"):
            for index in range(pairs):
                command = ba3c_command(role, "--run-dir", str(run_dir.path), "--index", str(index))
                started.append(Process(command, workdir / f"{role}-{index}.out"))
        for index in range(pairs):
            wait_for(
                lambda i=index: (
                    scrape(run_dir, "learner", i).value("ba3c_learner_train_steps_total") >= 5
                ),
                120 + 60 * pairs,
                f"5 training steps of learner {index}",
                interval=0.5,
            )
        read = lambda: [agent_steps(run_dir, pairs)]  # noqa: E731
        return [rate for (rate,) in window_rates(read, args.seconds, args.windows)]
    finally:
        for p in reversed(started):
            p.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=30.0, help="Per count and round.")
    parser.add_argument("--windows", type=int, default=3, help="Windows per count and round.")
    parser.add_argument("--rounds", type=int, default=1, help="Times the sweep runs.")
    parser.add_argument("--envs", type=int, default=8, help="Environments per pool.")
    parser.add_argument("-b", "--batch_size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaling.json"))
    args = parser.parse_args()
    if min(args.pairs) < 1 or args.windows < 1 or args.seconds <= 0:
        parser.error("--pairs, --windows and --seconds must be positive")

    runs: dict[int, list[float]] = {n: [] for n in args.pairs}
    load = [machine()["load_average"]]
    with tempfile.TemporaryDirectory(prefix="ba3c-scaling-") as tmp:
        for round_ in range(args.rounds):
            for n in args.pairs:
                print(f"round {round_ + 1}: {n} pair(s) ...", flush=True)
                runs[n] += measure(n, args, Path(tmp) / f"{round_}-{n}")
    load.append(machine()["load_average"])

    base = spread(runs[args.pairs[0]])["median"]
    result = {
        "env": args.env,
        "envs_per_pool": args.envs,
        "batch_size": args.batch_size,
        "pairs": {str(n): spread(v) for n, v in runs.items()},
        "speedup": {str(n): spread(v)["median"] / base for n, v in runs.items()},
        "machine": machine(),
        "load_average_before_after": load,
    }
    rows = [
        [n, fmt(result["pairs"][str(n)]), f"{result['speedup'][str(n)]:.2f}"] for n in args.pairs
    ]
    print(
        f"\n{args.env}, N shards (fc split N), N learners, N pools x {args.envs} envs, batch "
        f"{args.batch_size}, async; median [min-max] of {args.windows * args.rounds} windows\n"
    )
    print(
        markdown(["pairs", "agent steps/s (all learners)", f"speedup over {args.pairs[0]}"], rows)
    )
    print(f"\nload average (1, 5, 15 min) before / after: {load[0]} / {load[1]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
