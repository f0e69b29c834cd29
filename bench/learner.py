"""Learner benchmark: this machine's compute limit and how close a real run gets to it.

Measures, in one run:
  T  raw training samples/s of the model (gradient step, batch `--batch_size`)
  I  raw inference samples/s (forward pass + sampling, batch = pools x envs per pool)
  E  raw vectorised environment steps/s (ba3c.envs.make_pool, random actions)
  e2e  agent steps/s of 1 paramserver + 1 learner + `--pools` simulator pools, real
       processes, read from the learner's ba3c_learner_agent_steps_total counter

The compute limit is L = 1 / (1/E + 1/I + 1/T): every agent step costs one environment
step, one inference and one training sample on the same cores. Target: e2e >= 0.8 L.
T, I and E are measured before and after the end-to-end run and averaged, so that load
from other processes on a shared machine weighs on both sides of the ratio alike (the
load average is recorded too). Prints a Markdown table and writes
bench/results/learner.json.

    .venv/bin/python -m bench.learner [--env ALE/Breakout-v5] [--seconds 20] [--pools 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ba3c import envs, models
from ba3c.config import Config
from bench.common import ROOT, window_rates
from tests.support import Process, ba3c_command, make_run_dir, wait_for
from tests.support.metrics import scrape_address


def rate(fn, samples_per_call: int, seconds: float, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * samples_per_call / (time.perf_counter() - start)


def raw_rates(cfg: Config, batch: int, predict_batch: int, seconds: float) -> dict[str, float]:
    from services.learner.a3c import make_train_step

    spec = envs.describe(cfg)
    model = models.build_model(
        cfg, spec.observation_shape, spec.num_actions, spec.observation_dtype
    )
    rng = np.random.default_rng(0)

    def observations(n):
        if spec.observation_dtype == np.uint8:
            return rng.integers(0, 256, (n, *spec.observation_shape), dtype=np.uint8)
        return rng.standard_normal((n, *spec.observation_shape)).astype(np.float32)

    step = make_train_step(model, 0.01, 0.5, 40.0)
    train_obs = observations(batch)
    actions = rng.integers(0, spec.num_actions, batch).astype(np.int32)
    returns = rng.standard_normal(batch).astype(np.float32)
    t = rate(lambda: step(train_obs, actions, returns), batch, seconds)

    infer_obs = observations(predict_batch)
    i = rate(lambda: models.act(model, infer_obs, rng=rng), predict_batch, seconds)

    pool = envs.make_pool(cfg, cfg.simulator.simulator_procs, seed=0)
    pool.reset()
    n = cfg.simulator.simulator_procs
    e = rate(lambda: pool.step(rng.integers(0, spec.num_actions, n)), n, seconds)
    pool.close()
    return {"T": t, "I": i, "E": e}


def counter(address: str, name: str) -> float:
    return scrape_address(address, timeout=5).value(name)


def end_to_end(
    env: str,
    pools: int,
    envs_per_pool: int,
    batch: int,
    seconds: float,
    workdir: Path,
    windows: int = 1,
) -> list[float]:
    """Agent steps/s in each of `windows` consecutive windows that share `seconds`."""
    run_dir = make_run_dir(
        workdir / "run", env=env, batch_size=batch, pools=pools, simulator_procs=envs_per_pool
    )
    started = [
        Process(
            ba3c_command("paramserver", "--run-dir", str(run_dir.path)), workdir / "paramserver.out"
        ),
        Process(ba3c_command("learner", "--run-dir", str(run_dir.path)), workdir / "learner.out"),
    ]
    try:
        for i in range(pools):
            started.append(
                Process(
                    ba3c_command("simulator", "--run-dir", str(run_dir.path), "--index", str(i)),
                    workdir / f"sim{i}.out",
                )
            )
        target = run_dir.target_path("learner", 0)
        address = wait_for(
            lambda: json.loads(target.read_text())[0]["targets"][0], 120, "the learner's metrics"
        )
        steps = "ba3c_learner_agent_steps_total"
        wait_for(
            lambda: counter(address, "ba3c_learner_train_steps_total") >= 5, 180, "5 training steps"
        )
        windowed = window_rates(lambda: [counter(address, steps)], seconds, windows)
        return [rate for (rate,) in windowed]
    finally:
        for p in reversed(started):
            p.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--seconds", type=float, default=20.0, help="Per measurement.")
    parser.add_argument("--pools", type=int, default=1)
    parser.add_argument("--envs_per_pool", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument(
        "--windows",
        type=int,
        default=1,
        help="Split the end-to-end measurement into this many windows; "
        "their median is reported, with min and max.",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learner.json"))
    args = parser.parse_args()

    cfg = Config()
    cfg.run.env = args.env
    cfg.model.model = "auto"
    cfg.simulator.simulator_procs = args.envs_per_pool
    predict_batch = args.pools * args.envs_per_pool
    raw_seconds = min(args.seconds, 10.0) / 2
    before = raw_rates(cfg, args.batch_size, predict_batch, raw_seconds)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="ba3c-bench-") as tmp:
        rates = end_to_end(
            args.env,
            args.pools,
            args.envs_per_pool,
            args.batch_size,
            args.seconds,
            Path(tmp),
            args.windows,
        )
    e2e = statistics.median(rates)
    load.append(os.getloadavg()[0])
    after = raw_rates(cfg, args.batch_size, predict_batch, raw_seconds)
    raw = {k: (before[k] + after[k]) / 2 for k in before}
    limit = 1.0 / sum(1.0 / v for v in raw.values())
    result = {
        "env": args.env,
        "model": models.resolve_kind(cfg, envs.describe(cfg).observation_shape),
        "pools": args.pools,
        "envs_per_pool": args.envs_per_pool,
        "batch_size": args.batch_size,
        "predict_batch": predict_batch,
        "train_samples_per_s": raw["T"],
        "inference_samples_per_s": raw["I"],
        "env_steps_per_s": raw["E"],
        "limit_steps_per_s": limit,
        "end_to_end_steps_per_s": e2e,
        "ratio": e2e / limit,
        "target_ratio": 0.8,
        "end_to_end_windows": {"median": e2e, "min": min(rates), "max": max(rates), "runs": rates},
        "raw_before": before,
        "raw_after": after,
        "load_average_1min": load,
    }
    print("| measure | samples or steps / s |\n| --- | ---: |")
    print(f"| T: train (batch {args.batch_size}) | {raw['T']:,.0f} |")
    print(f"| I: inference (batch {predict_batch}) | {raw['I']:,.0f} |")
    print(f"| E: env steps ({args.envs_per_pool} envs) | {raw['E']:,.0f} |")
    print(f"| L = 1/(1/E+1/I+1/T) | {limit:,.0f} |")
    print(f"| end-to-end ({args.pools} pool(s)) | {e2e:,.0f} |")
    print(f"| ratio end-to-end / L | {e2e / limit:.2f} (target 0.80) |")
    print(f"\n1-minute load average before/after the end-to-end run: {load[0]:.1f} / {load[1]:.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
