"""Fault soak: one training run, a random fault every few seconds, for minutes on end.

    .venv/bin/python -m bench.faults_soak [--minutes 10] [--every 20] [--seed 0] [--sync]

The CI fault suite (tests/faults/) injects each kind of fault once; this keeps doing it.
It starts the same small CartPole run the suite uses (1 shard, 2 learners, 2 pools, the
evaluator; async unless --sync), waits until it trains, and then, every `every` seconds,
picks a fault and a victim with a seeded random generator (so a soak reproduces):

  kill      SIGKILL one process (shard, learner, pool or evaluator) and start it again
  freeze    SIGSTOP the shard for twice the learners' RPC deadline, then SIGCONT

After each fault it waits until versions and env frames move again and records how long
that took (from the kill, or from the SIGCONT). A fault the run does not recover from
within --patience seconds ends the soak with exit code 1. Prints a Markdown table (per
kind of fault: count, recovered, seconds to recover as median [min-max]) and writes
bench/results/faults_soak.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import RESULTS, fmt, machine, spread
from tests.faults.cluster import Cluster

VICTIMS = ["paramserver-0", "learner-0", "learner-1", "simulator-0", "simulator-1", "evaluator-0"]


def inject(cluster: Cluster, rng: random.Random) -> tuple[str, float]:
    """Injects one random fault; returns its name and the moment recovery is timed from."""
    if rng.random() < 0.2:
        cluster.freeze("paramserver-0")
        time.sleep(2 * cluster.cfg.net.rpc_timeout)  # the fault: frozen past the deadline
        cluster.thaw("paramserver-0")
        return "freeze paramserver-0", time.monotonic()
    victim = rng.choice(VICTIMS)
    at = cluster.kill(victim)
    cluster.restart(victim)
    return f"kill {victim}", at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=20.0, help="Seconds between faults.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sync", action="store_true", help="Sync mode, 2 replicas.")
    parser.add_argument(
        "--patience", type=float, default=240.0, help="Seconds a fault may take to recover from."
    )
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    extra = dict(use_sync=True, replicas_to_aggregate=2) if args.sync else {}
    before = machine()
    with tempfile.TemporaryDirectory(prefix="ba3c-soak-") as tmp:
        cluster = Cluster(Path(tmp), ps=1, learners=2, pools=2, **extra)
        cluster.start_all(shards=1, learners=2, pools=2, evaluator=True)
        records: list[dict] = []
        failed = False
        try:
            cluster.wait_training()
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(rng.uniform(0.5, 1.5) * args.every)  # the fault's random moment
                snapshot = cluster.progress()
                name, since = inject(cluster, rng)
                try:
                    after = cluster.wait_progress(None, args.patience, "the run to serve")
                    if snapshot is not None and after.version <= snapshot.version:
                        after = cluster.wait_progress(after, args.patience, "versions to move")
                    cluster.wait_progress(after, args.patience, "versions and frames to move")
                except AssertionError as e:
                    records.append({"fault": name, "recovered": False, "error": str(e)})
                    failed = True
                    break
                seconds = round(time.monotonic() - since, 2)
                records.append({"fault": name, "recovered": True, "recover_s": seconds})
                print(f"{name:<24} recovered in {seconds:6.1f} s", flush=True)
        finally:
            cluster.stop_all()

    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_kind[r["fault"]].append(r)
    rows = ["| fault | injected | recovered | seconds to recover |", "| --- | --- | --- | --- |"]
    for kind, rs in sorted(by_kind.items()):
        times = [r["recover_s"] for r in rs if r["recovered"]]
        rows.append(
            f"| {kind} | {len(rs)} | {len(times)} | {fmt(spread(times), 1) if times else '-'} |"
        )
    print("\n" + "\n".join(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faults_soak.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine_before": before,
                "machine_after": machine(),
                "injected": len(records),
                "recovered": sum(r["recovered"] for r in records),
                "faults": records,
            },
            indent=1,
        )
        + "\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
