"""Multi-host benchmark: one Breakout configuration on one host vs spread over four hosts.

The hosts are the network namespaces of tests/multihost/cluster.py (ba3c-h1..4 on a bridge,
addresses from 198.18.14.0/24; needs root and `ip`), built for this run and removed after
it. The same configuration (2 shards with the fc kernel split in two, 1 learner, 2 pools,
no evaluator) runs twice in one run of this script, as real processes, each service bound
to its host's address (BA3C_HOST):

  one host     every service on ba3c-h1
  four hosts   shards on ba3c-h1, learner on ba3c-h2, a pool each on ba3c-h3 and ba3c-h4

and for each, over `--windows` windows after training started: agent steps/s (the
learner's ba3c_learner_agent_steps_total) and the mean PushPull latency (the learner's
ba3c_learner_pushpull_seconds, sum / count in the window), i.e. across hosts in the second
layout. `--rounds` alternates the layouts that many times so that drifting load weighs on
both. All hosts share this machine's cores: the difference is the cost of the network path
(veth pairs and a bridge instead of one host's stack), not of slower machines. Prints a
Markdown table and writes bench/results/multihost.json.

    .venv/bin/python bench/multihost.py [--seconds 30] [--windows 3] [--rounds 1]
    .venv/bin/python bench/multihost.py --seconds 4 --windows 2 --envs 4 --batch_size 16
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

from bench.common import ROOT, fmt, machine, markdown, spread, window_rates
from tests.multihost.cluster import HOSTS, ClusterError, Host, namespace_hosts
from tests.support import Process, ba3c_command, make_run_dir, wait_for

H1, H2, H3, H4 = HOSTS
SERVICES = [
    ("paramserver", 0),
    ("paramserver", 1),
    ("learner", 0),
    ("simulator", 0),
    ("simulator", 1),
]
LAYOUTS: dict[str, dict[tuple[str, int], Host]] = {
    "one host": {service: H1 for service in SERVICES},
    "four hosts": {
        ("paramserver", 0): H1,
        ("paramserver", 1): H1,
        ("learner", 0): H2,
        ("simulator", 0): H3,
        ("simulator", 1): H4,
    },
}


def sample(address: str, *names: str) -> list[float]:
    """Values of unlabelled samples `names` on a /metrics page (0 for a missing one)."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    found = []
    for name in names:
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        found.append(float(match.group(1)) if match else 0.0)
    return found


def measure(layout: str, args: argparse.Namespace, workdir: Path) -> dict[str, list[float]]:
    """Starts the services as `layout` places them; per window: agent steps/s, PushPull s."""
    run_dir = make_run_dir(
        workdir / "run",
        env=args.env,
        ps=2,
        fc_splits=2,
        learners=1,
        pools=2,
        simulator_procs=args.envs,
        batch_size=args.batch_size,
    )
    started: list[Process] = []
    try:
        for (role, index), host in LAYOUTS[layout].items():
            command = ba3c_command(role, "--run-dir", str(run_dir.path), "--index", str(index))
            started.append(
                Process(
                    [*host.enter(), *command],
                    workdir / f"{role}-{index}.out",
                    env={"BA3C_HOST": host.address, "PYTHONPATH": str(ROOT)},
                )
            )
        target = run_dir.target_path("learner", 0)
        address = wait_for(
            lambda: json.loads(target.read_text())[0]["targets"][0], 180, "the learner's metrics"
        )
        wait_for(
            lambda: sample(address, "ba3c_learner_train_steps_total")[0] >= 5,
            240,
            "5 training steps",
            interval=0.5,
        )
        names = (
            "ba3c_learner_agent_steps_total",
            "ba3c_learner_pushpull_seconds_sum",
            "ba3c_learner_pushpull_seconds_count",
        )
        windows = window_rates(lambda: sample(address, *names), args.seconds, args.windows)
        return {
            "agent_steps_per_s": [steps for steps, _, _ in windows],
            # seconds per call in the window: (d sum / dt) / (d count / dt)
            "pushpull_seconds": [total / max(calls, 1e-9) for _, total, calls in windows],
        }
    finally:
        for p in reversed(started):
            p.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--seconds", type=float, default=30.0, help="Per layout and round.")
    parser.add_argument("--windows", type=int, default=3, help="Windows per layout and round.")
    parser.add_argument("--rounds", type=int, default=1, help="Times each layout runs.")
    parser.add_argument("--envs", type=int, default=8, help="Environments per pool.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "multihost.json"))
    args = parser.parse_args()

    runs: dict[str, dict[str, list[float]]] = {
        name: {"agent_steps_per_s": [], "pushpull_seconds": []} for name in LAYOUTS
    }
    load = [machine()["load_average"]]
    try:
        with namespace_hosts(), tempfile.TemporaryDirectory(prefix="ba3c-multihost-") as tmp:
            for round_ in range(args.rounds):
                for name in LAYOUTS:
                    print(f"round {round_ + 1}: {name} ...", flush=True)
                    folder = Path(tmp) / f"{round_}-{name.replace(' ', '-')}"
                    for key, values in measure(name, args, folder).items():
                        runs[name][key] += values
    except ClusterError as e:
        print(f"bench/multihost.py: error: {e}", file=sys.stderr)
        return 2
    load.append(machine()["load_average"])

    result = {
        "env": args.env,
        "shards": 2,
        "fc_splits": 2,
        "learners": 1,
        "pools": 2,
        "envs_per_pool": args.envs,
        "batch_size": args.batch_size,
        "layouts": {name: {k: spread(v) for k, v in m.items()} for name, m in runs.items()},
        "machine": machine(),
        "load_average_before_after": load,
    }
    one, four = (result["layouts"][n] for n in LAYOUTS)
    result["four_over_one_agent_steps"] = (
        four["agent_steps_per_s"]["median"] / one["agent_steps_per_s"]["median"]
    )
    rows = [
        [name, fmt(m["agent_steps_per_s"]), fmt(m["pushpull_seconds"], 2, 1000.0)]
        for name, m in result["layouts"].items()
    ]
    print(
        f"\n{args.env}, 2 shards (fc split 2), 1 learner, 2 pools x {args.envs} envs, "
        f"batch {args.batch_size}; median [min-max] of {args.windows * args.rounds} windows\n"
    )
    print(markdown(["layout", "agent steps/s", "PushPull ms (mean)"], rows))
    print(f"\nfour hosts / one host, agent steps/s: {result['four_over_one_agent_steps']:.2f}")
    print(f"load average (1, 5, 15 min) before / after: {load[0]} / {load[1]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
