"""Learner benchmark: this machine's compute limit and how close a real run gets to it.

Measures, in one run:
  T  raw training samples/s of the model (gradient step, batch `--batch_size`)
  I  raw inference samples/s (forward pass + sampling, batch = pools x envs per pool)
  E  raw vectorised environment steps/s (ba3c.envs.make_pool, random actions)
  e2e  agent steps/s of 1 paramserver + 1 learner + `--pools` simulator pools, real
       processes, read from the learner's ba3c_learner_agent_steps_total counter

The compute limit is L = 1 / (1/E + 1/I + 1/T): every agent step costs one environment
step, one inference and one training sample on the same cores. Target: e2e >= 0.9 L.
Beside the rates, where the CPU goes: each raw part's CPU ms per sample, and each
process's CPU ms per agent step end to end (what the run spends beyond the raw parts is
the overhead that keeps it from L).
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
from ba3c.config import Config, ConfigError, knobs, parse_value
from bench.common import ROOT, process_cpu_seconds, window_rates
from tests.support import Process, ba3c_command, make_run_dir, wait_for
from tests.support.metrics import scrape_address

TARGET = 0.9  # issue 17: end to end at 0.90 of L


def rate(fn, samples_per_call: int, seconds: float, warmup: int = 3) -> tuple[float, float]:
    """(samples/s, CPU ms per sample) of `fn`; the CPU is this process's, all threads
    (TensorFlow's and ALE's included)."""
    for _ in range(warmup):
        fn()
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    samples = calls * samples_per_call
    return samples / (time.perf_counter() - start), (time.process_time() - cpu) * 1e3 / samples


def raw_rates(
    cfg: Config, batch: int, predict_batch: int, seconds: float
) -> dict[str, dict[str, float]]:
    """{"rate": {"T", "I", "E"}, "cpu_ms": the same parts' CPU ms per sample}."""
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
    t, t_cpu = rate(lambda: step(train_obs, actions, returns), batch, seconds)

    infer_obs = observations(predict_batch)
    i, i_cpu = rate(lambda: models.act(model, infer_obs, rng=rng), predict_batch, seconds)

    pool = envs.make_pool(cfg, cfg.simulator.simulator_procs, seed=0)
    pool.reset()
    n = cfg.simulator.simulator_procs
    e, e_cpu = rate(lambda: pool.step(rng.integers(0, spec.num_actions, n)), n, seconds)
    pool.close()
    return {"rate": {"T": t, "I": i, "E": e}, "cpu_ms": {"T": t_cpu, "I": i_cpu, "E": e_cpu}}


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
    overrides: dict | None = None,
) -> tuple[list[float], list[dict[str, float]]]:
    """Agent steps/s in each of `windows` consecutive windows that share `seconds`, and
    in each window the CPU ms per agent step of each process (paramserver, learner,
    pool 0, ...; all threads, from /proc)."""
    run_dir = make_run_dir(
        workdir / "run",
        env=env,
        batch_size=batch,
        pools=pools,
        simulator_procs=envs_per_pool,
        **(overrides or {}),
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
        names = ["paramserver", "learner", *(f"pool {i}" for i in range(pools))]
        windowed = window_rates(
            lambda: [counter(address, steps), *(process_cpu_seconds(p.pid) for p in started)],
            seconds,
            windows,
        )
        cpu = [
            {name: 1e3 * used / steps for name, used in zip(names, used_rates, strict=True)}
            for steps, *used_rates in windowed
        ]
        return [w[0] for w in windowed], cpu
    finally:
        for p in reversed(started):
            p.stop()


def cpu_rows(raw_cpu: dict, used_cpu: dict) -> list[tuple[str, str, str]]:
    """(what, raw parts' CPU ms per agent step, the processes' end to end) rows: the pools
    against E, the learner against I + T, the shards against nothing raw."""
    pools = sum(v for k, v in used_cpu.items() if k.startswith("pool"))
    return [
        ("environments: E / the pools", f"{raw_cpu['E']:.3f}", f"{pools:.3f}"),
        (
            "acting and training: I + T / the learner",
            f"{raw_cpu['I'] + raw_cpu['T']:.3f}",
            f"{used_cpu['learner']:.3f}",
        ),
        ("parameters: - / the shard", "-", f"{used_cpu['paramserver']:.3f}"),
        ("total", f"{sum(raw_cpu.values()):.3f}", f"{sum(used_cpu.values()):.3f}"),
    ]


def knob_overrides(parser: argparse.ArgumentParser, pairs: list[str]) -> dict:
    """{knob: value} from KNOB=VALUE strings, parsed as ba3c parses flags and variables."""
    by_name = {k.name: k for k in knobs()}
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in by_name:
            parser.error(f"--set {pair!r}: expected KNOB=VALUE with a known knob, e.g. threads=1")
        try:
            out[name] = parse_value(by_name[name], text, f"--set {pair!r}")
        except ConfigError as e:
            parser.error(str(e))
    return out


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
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="A configuration knob for the end-to-end run's services, e.g. threads=1 "
        "(repeatable; the raw parts keep their defaults).",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learner.json"))
    args = parser.parse_args()
    overrides = knob_overrides(parser, args.set)

    cfg = Config()
    cfg.run.env = args.env
    cfg.model.model = "auto"
    cfg.simulator.simulator_procs = args.envs_per_pool
    predict_batch = args.pools * args.envs_per_pool
    raw_seconds = min(args.seconds, 10.0) / 2
    measured = raw_rates(cfg, args.batch_size, predict_batch, raw_seconds)
    before, before_cpu = measured["rate"], measured["cpu_ms"]
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="ba3c-bench-") as tmp:
        rates, cpu_windows = end_to_end(
            args.env,
            args.pools,
            args.envs_per_pool,
            args.batch_size,
            args.seconds,
            Path(tmp),
            args.windows,
            overrides,
        )
    e2e = statistics.median(rates)
    load.append(os.getloadavg()[0])
    measured = raw_rates(cfg, args.batch_size, predict_batch, raw_seconds)
    after, after_cpu = measured["rate"], measured["cpu_ms"]
    raw = {k: (before[k] + after[k]) / 2 for k in before}
    limit = 1.0 / sum(1.0 / v for v in raw.values())
    raw_cpu = {k: (before_cpu[k] + after_cpu[k]) / 2 for k in before_cpu}
    used_cpu = {k: statistics.median(w[k] for w in cpu_windows) for k in cpu_windows[0]}
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
        "target_ratio": TARGET,
        "end_to_end_windows": {"median": e2e, "min": min(rates), "max": max(rates), "runs": rates},
        "raw_before": before,
        "raw_after": after,
        # where the CPU goes: each raw part's CPU ms per sample, and each process's CPU ms
        # per agent step end to end (median over the windows)
        "raw_cpu_ms": raw_cpu,
        "cpu_ms_per_agent_step": used_cpu,
        "load_average_1min": load,
        "overrides": overrides,
    }
    print("| measure | samples or steps / s |\n| --- | ---: |")
    print(f"| T: train (batch {args.batch_size}) | {raw['T']:,.0f} |")
    print(f"| I: inference (batch {predict_batch}) | {raw['I']:,.0f} |")
    print(f"| E: env steps ({args.envs_per_pool} envs) | {raw['E']:,.0f} |")
    print(f"| L = 1/(1/E+1/I+1/T) | {limit:,.0f} |")
    print(f"| end-to-end ({args.pools} pool(s)) | {e2e:,.0f} |")
    print(f"| ratio end-to-end / L | {e2e / limit:.2f} (target {TARGET:.2f}) |")
    print("\n| CPU ms per agent step | raw parts | end to end |\n| --- | ---: | ---: |")
    for label, raw_ms, process in cpu_rows(raw_cpu, used_cpu):
        print(f"| {label} | {raw_ms} | {process} |")
    print(f"\n1-minute load average before/after the end-to-end run: {load[0]:.1f} / {load[1]:.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
