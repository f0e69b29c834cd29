"""Measures the evaluator's costs: playing (agent steps/s, with and without recording),
an evaluation's episodes side by side vs one after another (Pong, 5 episodes, CPU seconds),
and reading parameters (Pull of the whole Nature CNN vs a Pull of an unchanged shard).

    .venv/bin/python -m bench.evaluator

Prints medians and ratios measured in this one run (the machine is shared; absolute
figures move, ratios much less).
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path

from ba3c import config as configuration
from ba3c import models
from ba3c.v1 import paramserver_pb2 as ps
from tests.evaluator import cluster
from tests.support import Process, ba3c_command, make_run_dir, wait_for

REPEATS = 7
STEPS = 300
PULLS = 30


def playing(folder: Path) -> dict[str, float]:
    from services.evaluator.evaluation import Evaluation

    cfg = configuration.Config()
    cfg.run.env = "ALE/Breakout-v5"
    cfg.evaluator.eval_episodes = 1
    cfg.evaluator.eval_max_steps = STEPS
    models.configure_threads(1)
    runs = {"play": Evaluation(cfg, None), "play+record": Evaluation(cfg, folder / "videos")}
    weights = models.get_weights(runs["play"].model)
    rates: dict[str, list[float]] = {label: [] for label in runs}
    cpu: dict[str, list[float]] = {label: [] for label in runs}
    for evaluation in runs.values():
        evaluation.run(weights, 0, 0)  # warm-up: traces the model
    for _ in range(REPEATS):  # interleaved, so that the machine's load hits both alike
        for label, evaluation in runs.items():
            before = cpu_seconds()
            result = evaluation.run(weights, 0, 0)
            steps = result.episodes[0].length
            cpu[label].append((cpu_seconds() - before) / steps)
            rates[label].append(steps / result.seconds)
    for evaluation in runs.values():
        evaluation.close()
    out = {label: statistics.median(r) for label, r in rates.items()}
    out.update({f"{label} cpu": statistics.median(c) for label, c in cpu.items()})
    return out


def side_by_side(repeats: int = 3) -> dict[str, list[float]]:
    """CPU seconds of one Pong evaluation (5 sampled episodes, the initial network), its
    episodes one at a time (groups of 1) vs side by side; alternated, `repeats` each. The
    two play the same games (checked)."""
    from services.evaluator import evaluation

    cfg = configuration.Config()
    cfg.run.env = "PongNoFrameskip-v4"
    cfg.evaluator.eval_episodes = 5
    runs = {}
    default = evaluation.SIDE_BY_SIDE
    for label, group in (("one at a time", 1), ("side by side", default)):
        evaluation.SIDE_BY_SIDE = group  # read when an Evaluation builds its environments
        runs[label] = evaluation.Evaluation(cfg, None)
    evaluation.SIDE_BY_SIDE = default
    weights = models.get_weights(runs["side by side"].model)
    cpu: dict[str, list[float]] = {label: [] for label in runs}
    scores = {}
    for _ in range(repeats):
        for label, ev in runs.items():
            before = time.process_time()
            result = ev.run(weights, 0, 0)
            cpu[label].append(time.process_time() - before)
            scores[label] = [(e.score, e.length) for e in result.episodes]
    assert scores["one at a time"] == scores["side by side"], scores
    for ev in runs.values():
        ev.close()
    return cpu


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ffmpeg), in seconds."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def pulling(folder: Path) -> dict[str, float]:
    run_dir = make_run_dir(folder / "run", env="ALE/Breakout-v5")
    cfg = run_dir.load_config(environ={})
    shard = Process(
        ba3c_command("paramserver", "--run-dir", str(run_dir.path)), folder / "paramserver.out"
    )
    try:
        wait_for(lambda: run_dir.read_address("paramserver", 0), 60, "the shard")
        cluster.initialize(run_dir, cfg, models.get_weights(cluster.build_model(cfg)))
        stub = cluster.stub(run_dir, 0)
        out = {}
        for label, have in (("full pull", -1), ("unchanged pull", 0)):
            times = []
            for _ in range(PULLS):
                started = time.perf_counter()
                reply = stub.Pull(ps.PullRequest(client_id="bench", have_version=have), timeout=60)
                times.append(time.perf_counter() - started)
            assert reply.unchanged == (have == 0)
            out[label] = statistics.median(times)
        out["bytes"] = sum(
            p.tensor.ByteSize()
            for p in stub.Pull(ps.PullRequest(have_version=-1), timeout=60).parameters
        )
        return out
    finally:
        shard.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        play = playing(Path(tmp))
        grouped = side_by_side()
        pull = pulling(Path(tmp))
    print(f"Breakout, Nature CNN, batch-1 inference, 1 TF thread, {REPEATS} x {STEPS} steps:")
    for label in ("play", "play+record"):
        print(
            f"  {label:<14} median {play[label]:7.0f} agent steps/s (wall), "
            f"{play[label + ' cpu'] * 1000:5.2f} CPU ms per step (incl. ffmpeg)"
        )
    print(
        f"  recording: x{play['play'] / play['play+record']:.2f} the wall time, "
        f"x{play['play+record cpu'] / play['play cpu']:.2f} the CPU time of playing"
    )
    one, side = (statistics.median(grouped[k]) for k in ("one at a time", "side by side"))
    print(
        f"Pong evaluation, 5 episodes, initial network: {one:.1f} s CPU one at a time, "
        f"{side:.1f} s side by side (x{one / side:.2f}; median of {len(grouped['side by side'])})"
    )
    print(
        f"Pull from a real paramserver, {pull['bytes'] / 2**20:.1f} MiB of parameters, "
        f"{PULLS} calls each:"
    )
    for label in ("full pull", "unchanged pull"):
        print(f"  {label:<14} median {pull[label] * 1000:7.2f} ms")
    print(f"  have_version saves x{pull['full pull'] / pull['unchanged pull']:.0f}")


if __name__ == "__main__":
    main()
