"""Benchmark: raw vectorised stepping vs the same pool streaming to a learner over gRPC.

    .venv/bin/python -m bench.simulator [--envs 16] [--repeats 5] [--seconds 3]
                                        [--env ALE/Breakout-v5] [--profile]

In one run and one process, for each pool size N it alternates three legs, `--repeats`
times each: "raw" steps the pool (full observations) with random actions as fast as it
can; "grpc" (before issue 17) runs the simulator service's own streaming loop
(services.simulator.stream.run) on that pool, one stream, full frame stacks; "newest" the
same with the newest frame only (one change alone); "double"
(after, the default for Atari) runs it as the service does with `double_buffer` and
`newest_frame`: two halves of N/2 environments, each on its own stream in its own thread,
sending the newest frame only. The learner is a separate process
(tests/servers/random_learner.py: it checks every request against the contract and answers
at once with random actions). Throughput is agent steps per second (N per pool step);
bytes per agent step is one request's size over N. Prints a Markdown table of medians,
min and max, and the ratios of the medians; writes bench/results/simulator.json. Target:
the double-buffered pool keeps >= 95% of raw at N=16. With --profile, one extra grpc leg
runs under cProfile and the top functions are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import structlog
from prometheus_client import REGISTRY

from ba3c import envs, rpc
from ba3c.config import Config
from ba3c.rundir import RunDir
from bench.common import ROOT
from services.simulator import stream

TARGET = 0.95


def raw_leg(pool: envs.EnvPool, seconds: float, rng: np.random.Generator) -> float:
    pool.reset()
    steps = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        pool.step(rng.integers(0, pool.spec.num_actions, pool.num_envs, dtype=np.int32))
        steps += 1
    return steps * pool.num_envs / elapsed


def round_trip_leg(pool: envs.EnvPool, address: str, token: str, seconds: float) -> float:
    """Milliseconds per Act round trip of one pool-sized request, with no stepping: the
    transport's share of a pool step."""
    step = pool.step(np.zeros(pool.num_envs, np.int32))
    spec = stream.pool_spec(pool.spec, pool.num_envs)
    stop = threading.Event()
    with rpc.make_channel(address, token) as channel, stream.ActStream(channel, stop) as act:
        act.exchange(stream.first_request("bench-rtt", spec, step.observations))
        request = stream.next_request("bench-rtt", step)
        trips = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            act.exchange(request)
            trips += 1
    return elapsed / trips * 1e3


def double_leg(pools: list[envs.EnvPool], address: str, token: str, seconds: float) -> float:
    """Agent steps/s of the pool's halves, each streaming on its own channel and thread,
    as `ba3c simulator` does with double_buffer."""
    stop = threading.Event()
    steps = [0] * len(pools)

    def half(i: int) -> None:
        with rpc.make_channel(address, token) as channel, stream.ActStream(channel, stop) as act:
            steps[i] = stream.run(pools[i], act, f"bench-{'ab'[i]}", stop)

    threads = [threading.Thread(target=half, args=(i,)) for i in range(len(pools))]
    timer = threading.Timer(seconds, stop.set)
    start = time.perf_counter()
    timer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return sum(n * p.num_envs for n, p in zip(steps, pools, strict=True)) / elapsed


def bytes_per_agent_step(pool: envs.EnvPool) -> float:
    """One later ActRequest's size over the environments it carries."""
    pool.reset()
    step = pool.step(np.zeros(pool.num_envs, np.int32))
    return len(stream.next_request("simulator-0/a", step)) / pool.num_envs


def seconds_in(histogram: str) -> float:
    return REGISTRY.get_sample_value(f"{histogram}_sum") or 0.0


def grpc_leg(
    pool: envs.EnvPool, address: str, token: str, seconds: float, split: list | None = None
) -> float:
    """Agent steps/s of the service's streaming loop; appends to `split` the mean ms per
    pool step spent waiting for actions and stepping."""
    stop = threading.Event()
    before = seconds_in("ba3c_simulator_wait_seconds"), seconds_in("ba3c_simulator_step_seconds")
    with rpc.make_channel(address, token) as channel, stream.ActStream(channel, stop) as act:
        timer = threading.Timer(seconds, stop.set)
        start = time.perf_counter()
        timer.start()
        steps = stream.run(pool, act, "bench-0", stop)
        elapsed = time.perf_counter() - start
    if split is not None and steps:
        split.append(
            {
                "wait_ms": (seconds_in("ba3c_simulator_wait_seconds") - before[0]) / steps * 1e3,
                "step_ms": (seconds_in("ba3c_simulator_step_seconds") - before[1]) / steps * 1e3,
            }
        )
    return steps * pool.num_envs / elapsed


def summary(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "simulator.json")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = Config()
    cfg.run.env = args.env
    results = []
    with tempfile.TemporaryDirectory(prefix="ba3c-bench-sim-") as tmp:
        run_dir = RunDir(tmp)
        run_dir.create(cfg)
        learner = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.random_learner", str(run_dir.path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            address = run_dir.wait_for_address("learner", 0, timeout=60)
            token = run_dir.read_secret()
            for n in args.envs:
                results.append(measure(cfg, n, args, address, token))
        finally:
            learner.terminate()
            learner.wait(10)

    print(table(results, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "simulator",
                "env": args.env,
                "seconds_per_leg": args.seconds,
                "repeats": args.repeats,
                "target_ratio": TARGET,
                "machine": {**machine(), "load_avg_at_start": load_at_start},
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


def measure(cfg: Config, n: int, args, address: str, token: str) -> dict:
    rng = np.random.default_rng(0)
    sizes = [n - n // 2, n // 2] if n >= 2 else [n]
    with (
        envs.make_pool(cfg, n, seed=0) as pool,
        envs.make_pool(cfg, n, seed=0, newest_frame=True) as newest_pool,
        envs.make_pool(cfg, sizes[0], seed=0, newest_frame=True) as a,
        envs.make_pool(cfg, sizes[-1], seed=sizes[0], newest_frame=True) as b,
    ):
        halves = [a, b] if n >= 2 else [a]
        raw_leg(pool, 1.0, rng)  # warm up every path
        grpc_leg(pool, address, token, 1.0)
        double_leg(halves, address, token, 1.0)
        raw, grpc, newest, double, split, rtt = [], [], [], [], [], []
        for _ in range(args.repeats):
            raw.append(raw_leg(pool, args.seconds, rng))
            grpc.append(grpc_leg(pool, address, token, args.seconds, split))
            newest.append(grpc_leg(newest_pool, address, token, args.seconds))
            double.append(double_leg(halves, address, token, args.seconds))
            rtt.append(round_trip_leg(pool, address, token, args.seconds / 2))
        request_bytes = {
            "full": bytes_per_agent_step(pool),
            "newest_frame": bytes_per_agent_step(a),
        }
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            grpc_leg(pool, address, token, args.seconds)
            profiler.disable()
            print(f"\n## cProfile of one grpc leg, N={n} (main thread, by own time)\n")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    ratios = [g / r for g, r in zip(grpc, raw, strict=True)]
    return {
        "num_envs": n,
        "raw": summary(raw),
        "grpc": summary(grpc),
        "ratio_of_medians": statistics.median(grpc) / statistics.median(raw),
        "ratio_per_repeat": summary(ratios),
        "newest": summary(newest),
        "newest_ratio_of_medians": statistics.median(newest) / statistics.median(raw),
        "double": summary(double),
        "double_halves": [p.num_envs for p in halves],
        "double_ratio_of_medians": statistics.median(double) / statistics.median(raw),
        "double_ratio_per_repeat": summary([d / r for d, r in zip(double, raw, strict=True)]),
        "bytes_per_agent_step": request_bytes,
        "grpc_wait_ms_per_step": summary([x["wait_ms"] for x in split]),
        "grpc_step_ms_per_step": summary([x["step_ms"] for x in split]),
        "round_trip_ms": summary(rtt),
        # what the ratio would be if a grpc step cost a raw step plus one round trip
        "ratio_bound_from_round_trip": 1
        / (1 + statistics.median(rtt) * statistics.median(raw) / (1e3 * n)),
    }


def table(results: list[dict], args) -> str:
    lines = [
        f"Simulator throughput, {args.env}, agent steps/s, {args.repeats} x {args.seconds:g} s "
        "per leg (median [min-max])",
        "",
        "| N | raw | before: one stream, full stacks | before / raw | one stream, newest frame "
        "| / raw | after: double-buffered, newest frame | after / raw | target "
        "| bytes per agent step, before -> after | before ms/step: waiting, stepping "
        "| round trip ms (no stepping) | raw / (raw + round trip) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:

        def fmt(s, digits=0):
            return f"{s['median']:,.{digits}f} [{s['min']:,.{digits}f}-{s['max']:,.{digits}f}]"

        ok = "met" if r["double_ratio_of_medians"] >= TARGET else "MISSED"
        b = r["bytes_per_agent_step"]
        lines.append(
            f"| {r['num_envs']} | {fmt(r['raw'])} | {fmt(r['grpc'])} | "
            f"{r['ratio_of_medians']:.1%} | {fmt(r['newest'])} | "
            f"{r['newest_ratio_of_medians']:.1%} | {fmt(r['double'])} | "
            f"{r['double_ratio_of_medians']:.1%} | >= {TARGET:.0%} {ok} | "
            f"{b['full']:,.0f} -> {b['newest_frame']:,.0f} | "
            f"{r['grpc_wait_ms_per_step']['median']:.2f}, "
            f"{r['grpc_step_ms_per_step']['median']:.2f} | {fmt(r['round_trip_ms'], 3)} | "
            f"{r['ratio_bound_from_round_trip']:.1%} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "cores": len(os.sched_getaffinity(0)),
        "load_avg_at_end": os.getloadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
