"""`make bench`: the quick variant of every benchmark, then one table of targets.

    .venv/bin/python -m bench.run_all [--only learner paramserver capacity pushcost simulator]
                                      [--summarise-only]

Runs each benchmark script as its own process (one after the other, so that they do not
compete for the cores), each writing its JSON to bench/results/; then reads those files
and prints one Markdown table: every figure as median [min-max] of the repeats, every
ratio taken within one run, each target with "met" or "MISSED", and the machine's cores
and load average before and after each benchmark. The table is also written to
bench/results/summary.md and summary.json. --summarise-only rebuilds the table from the
JSON files already there. bench/README.md says what each figure means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, fmt, machine, markdown
from bench.learner import cpu_rows

# name -> the quick variant's arguments (a few minutes in all on 2 cores)
QUICK = {
    "learner": ["--seconds", "30", "--windows", "3"],
    "paramserver": ["--shards", "1", "2", "4", "--repeats", "3", "--steps", "10"],
    "capacity": ["--learners", "1", "2", "4", "8", "16", "--seconds", "2", "--repeats", "3"],
    "pushcost": ["--pushes", "30", "--repeats", "3"],
    "simulator": ["--envs", "16", "--repeats", "3", "--seconds", "2"],
}
TARGETS = {"limit": 0.90, "transport": 0.30, "simulator": 0.95, "pushcost": 1.3}


def run(name: str) -> dict:
    """Runs bench/NAME.py's quick variant; returns what happened around it."""
    command = [sys.executable, "-m", f"bench.{name}", *QUICK[name]]
    print(f"\n## {name}: {' '.join(command[1:])}\n", flush=True)
    before, started = machine(), time.monotonic()
    code = subprocess.call(command, cwd=ROOT)
    return {
        "command": " ".join(["python", *command[1:]]),
        "exit_code": code,
        "seconds": round(time.monotonic() - started, 1),
        "load_before": before["load_average"],
        "load_after": machine()["load_average"],
    }


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def spread_of(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def limit_section(result: dict) -> tuple[list[list], str]:
    raw = {k: spread_of([result["raw_before"][k], result["raw_after"][k]]) for k in "EIT"}
    e2e = result.get("end_to_end_windows") or spread_of([result["end_to_end_steps_per_s"]])
    ratio = result["ratio"]
    table = markdown(
        ["figure", "per second"],
        [
            [f"E: raw env steps ({result['envs_per_pool']} envs, one pool)", fmt(raw["E"])],
            [f"I: raw inference samples (batch {result['predict_batch']})", fmt(raw["I"])],
            [f"T: raw train samples (batch {result['batch_size']})", fmt(raw["T"])],
            ["L = 1/(1/E+1/I+1/T): agent steps", f"{result['limit_steps_per_s']:,.0f}"],
            [
                f"end-to-end agent steps (1 paramserver, 1 learner, {result['pools']} pool)",
                fmt(e2e),
            ],
            ["end-to-end / L", f"{ratio:.2f}"],
        ],
    )
    target = [
        f"end-to-end / L ({result['env']}, {result['model']} model)",
        f"{ratio:.2f}",
        f">= {TARGETS['limit']:.2f}",
        verdict(ratio >= TARGETS["limit"]),
    ]
    text = "E, I and T before and after the end-to-end run, [min-max] of the two.\n\n" + table
    if "cpu_ms_per_agent_step" in result:
        rows = cpu_rows(result["raw_cpu_ms"], result["cpu_ms_per_agent_step"])
        text += (
            "\n\nWhere the CPU goes: the raw parts' CPU ms per sample (this process, all "
            "threads) against each process's CPU ms per agent step end to end (/proc, median "
            "of the windows):\n\n"
            + markdown(["CPU ms per agent step", "raw parts", "end to end"], rows)
        )
    return [target], text


def _cpu_ratio(row: dict, raw: dict) -> str:
    """Caller + server CPU per step over raw's: the overhead load cannot blur."""
    if "client_cpu_ms" not in row:
        return "-"
    used = row["client_cpu_ms"] + row["server_cpu_ms"]
    return f"{used / (raw['client_cpu_ms'] + raw['server_cpu_ms']):.2f}"


def transport_section(result: dict) -> tuple[list[list], str]:
    by = {(r["shards"], r["variant"], r["wire"]): r for r in result["rows"]}
    rows, targets = [], []
    for shards, dtype in sorted({(k[0], k[2]) for k in by}):
        raw, server, stub = (by[(shards, v, dtype)] for v in ("raw", "server", "stub"))
        # the zero-copy codec path (tensors.Packer/parse) where measured, else the stub
        learner = by.get((shards, "codec", dtype), stub)
        overhead = learner["ratio_to_raw"] - 1
        rows.append(
            [
                shards,
                dtype,
                f"{raw['request_mb']} / {raw['reply_mb']}",
                f"{raw['median_ms']} [{raw['min_ms']}-{raw['max_ms']}]",
                f"{server['median_ms']} [{server['min_ms']}-{server['max_ms']}] "
                f"(x{server['ratio_to_raw']:.2f})",
                f"{stub['median_ms']} [{stub['min_ms']}-{stub['max_ms']}] "
                f"(x{stub['ratio_to_raw']:.2f})",
                f"{learner['median_ms']} [{learner['min_ms']}-{learner['max_ms']}] "
                f"(x{learner['ratio_to_raw']:.2f})",
                f"{server['server_cpu_ms']}",
                f"{stub.get('client_cpu_ms', '-')} / {learner.get('client_cpu_ms', '-')}",
                _cpu_ratio(learner, raw),
            ]
        )
        targets.append(
            [
                f"PushPull overhead vs raw gRPC, {shards} shard(s), wire {dtype} "
                f"({'zero-copy codec' if learner is not stub else 'protobuf stub'})",
                f"{overhead:+.0%}",
                f"< {TARGETS['transport']:.0%}",
                verdict(overhead < TARGETS["transport"]),
            ]
        )
    table = markdown(
        [
            "shards",
            "wire",
            "request / reply MB",
            "raw gRPC ms",
            "shard, pre-serialised ms",
            "protobuf stub ms",
            "zero-copy codec ms",
            "shard CPU ms/step",
            "caller CPU ms/step (stub / codec)",
            "codec CPU x raw (caller + server)",
        ],
        rows,
    )
    parts = result.get("shard_cpu_ms_breakdown", {})
    breakdown = "; ".join(f"{name} {ms} ms" for name, ms in parts.items())
    return (
        targets,
        "Nature CNN (1.69M parameters) per step, all shards in parallel; "
        "x = ratio of medians to raw in the same run.\n\n"
        + table
        + (f"\n\nShard CPU per push, in-process, 1 shard: {breakdown}." if breakdown else ""),
    )


def simulator_section(result: dict) -> tuple[list[list], str]:
    rows, targets = [], []
    for r in result["results"]:
        # before issue 17 the file had only the single-stream, full-stack leg
        ratio = r.get("double_ratio_of_medians", r["ratio_of_medians"])
        request_bytes = r.get("bytes_per_agent_step", {})
        rows.append(
            [
                r["num_envs"],
                fmt(r["raw"]),
                fmt(r["grpc"]),
                f"{r['ratio_of_medians']:.2f}",
                fmt(r["double"]) if "double" in r else "-",
                f"{ratio:.2f}",
                " -> ".join(f"{b:,.0f}" for b in request_bytes.values()) or "-",
                fmt(r["round_trip_ms"], 2),
            ]
        )
        if r["num_envs"] == 16:
            targets.append(
                [
                    "simulator pool over gRPC (double-buffered, newest frame) / raw, 16 envs",
                    f"{ratio:.2f}",
                    f">= {TARGETS['simulator']:.2f}",
                    verdict(ratio >= TARGETS["simulator"]),
                ]
            )
    table = markdown(
        [
            "envs",
            "raw steps/s",
            "one stream, full stacks",
            "/ raw",
            "double-buffered, newest frame",
            "/ raw",
            "bytes per agent step",
            "Act round trip ms",
        ],
        rows,
    )
    return targets, f"{result['env']}, random actions.\n\n" + table


def knee(rows: list[dict]) -> int:
    """The learner count after which adding learners adds < 10% applied pushes/s."""
    rows = sorted(rows, key=lambda r: r["learners"])
    for prev, nxt in zip(rows, rows[1:], strict=False):
        if nxt["applied_per_s"]["median"] < 1.1 * prev["applied_per_s"]["median"]:
            return prev["learners"]
    return rows[-1]["learners"]


def _push_bytes(result: dict) -> int | None:
    if "request_bytes" not in result:
        return None  # results of a run before the network columns
    return result["request_bytes"] + result["reply_bytes"]


def capacity_section(result: dict) -> tuple[list[list], str]:
    from bench.capacity import table

    knees = ", ".join(
        f"{mode} N = {knee([r for r in result['rows'] if r['mode'] == mode])}"
        for mode in ("async", "sync")
        if any(r["mode"] == mode for r in result["rows"])
    )
    return [], (
        f"One shard of {result['shard_parameters']:,} parameters ({result['model']}, "
        f"1 of {result['of_shards']}), {result['grad_dtype']} gradients, "
        f"{result['repeats']} windows of {result['seconds_per_window']:g} s. Knee "
        f"(more learners add < 10% pushes/s): {knees}.\n\n"
        + table(result["rows"], _push_bytes(result))
    )


def pushcost_section(result: dict) -> tuple[list[list], str]:
    from bench.pushcost import table

    targets = [
        [
            f"shard CPU per push / (raw gRPC echo + compiled update), {r['model']} "
            f"{r['parameters'] / 1e6:.2f}M, {r['optimizer']}, {r['grad_dtype']}",
            f"{r['ratio']['median']:.3f}",
            f"<= {TARGETS['pushcost']:.1f}",
            verdict(r["ratio"]["median"] <= TARGETS["pushcost"]),
        ]
        for r in result["rows"]
    ]
    return targets, (
        f"One shard, one caller, {result['repeats']} repeats of {result['pushes']} calls "
        "(CPU from /proc/PID/task/*/schedstat; the update alone in-process).\n\n"
        + table(result["rows"])
    )


SECTIONS = {
    "learner": ("Limit ratio (bench/learner.py)", limit_section),
    "paramserver": ("Transport (bench/paramserver.py)", transport_section),
    "simulator": ("Simulator (bench/simulator.py)", simulator_section),
    "capacity": ("Paramserver capacity (bench/capacity.py)", capacity_section),
    "pushcost": ("Push cost (bench/pushcost.py)", pushcost_section),
}


def profile_pushpull(steps: int = 20) -> list[dict]:
    """cProfile of a learner's side of PushPull (Nature CNN, 1 shard, float32 gradients,
    encode + call + decode, in this thread) against a real `ba3c paramserver`: the top
    functions by own time, in ms per step. Waiting for the reply (the shard's work and the
    bytes on the wire) shows up as the gRPC call's own time."""
    import cProfile
    import tempfile

    from ba3c import config as configuration
    from ba3c import tensors
    from ba3c.rundir import RunDir
    from bench import paramserver as ps_bench

    with tempfile.TemporaryDirectory(prefix="ba3c-bench-profile-") as tmp:
        cfg = configuration.Config()
        cfg.net.metrics = False
        cfg.paramserver.save_every = 0
        run_dir = RunDir(Path(tmp) / "run")
        run_dir.create(cfg)
        servers = ps_bench.Servers(run_dir, 1)
        try:
            setup = ps_bench.Setup(run_dir, 1)

            def step() -> None:
                reply = setup.stubs[0].PushPull(setup.request(0, "float32"), timeout=60)
                tensors.decode_named(reply.parameters)

            for _ in range(3):
                step()
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(steps):
                step()
            profiler.disable()
            setup.close()
        finally:
            servers.stop()
    import pstats

    stats = pstats.Stats(profiler).stats
    rows = sorted(
        (
            (tt, f"{Path(file).name}:{line} {func}", calls)
            for (file, line, func), (_, calls, tt, _, _) in stats.items()
        ),
        reverse=True,
    )
    total = sum(r[0] for r in rows)
    return [
        {
            "function": name,
            "ms_per_step": round(1e3 * tt / steps, 2),
            "share": round(tt / total, 3),
            "calls_per_step": calls / steps,
        }
        for tt, name, calls in rows[:10]
    ]


def machine_line(name: str, result: dict, ran: dict | None) -> str:
    if ran:
        return (
            f"{name}: 1-minute load {ran['load_before'][0]:.1f} before, "
            f"{ran['load_after'][0]:.1f} after; {ran['seconds']:.0f} s; "
            f"exit {ran['exit_code']}"
        )
    m = result.get("machine") or result.get("machine_before") or {}
    load_avg = (
        m.get("load_average")
        or m.get("load_avg_at_start")
        or m.get("load_average_at_start")
        or result.get("load_average_1min")
    )
    return f"{name}: not re-run (results of an earlier run); load then {load_avg}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(QUICK), default=list(QUICK))
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument(
        "--no-profile", action="store_true", help="Skip the cProfile of a learner's PushPull."
    )
    args = parser.parse_args(argv)

    start = machine()
    ran: dict[str, dict] = {}
    if not args.summarise_only:
        for name in args.only:
            ran[name] = run(name)
    targets, sections, notes = [], [], []
    for name in QUICK:
        result = load(name)
        if result is None:
            notes.append(f"{name}: no results (bench/results/{name}.json missing)")
            continue
        if name in ran and ran[name]["exit_code"] != 0:
            notes.append(f"{name}: FAILED (exit {ran[name]['exit_code']}); older results shown")
        title, section = SECTIONS[name]
        found, text = section(result)
        targets += found
        sections += [f"## {title}", "", text, ""]
        notes.append(machine_line(name, result, ran.get(name)))
    profile = []
    if not args.summarise_only and not args.no_profile:
        print("\n## cProfile of a learner's PushPull\n", flush=True)
        profile = profile_pushpull()
        sections += [
            "## Where a learner's PushPull goes (cProfile, Nature CNN, 1 shard, float32)",
            "",
            markdown(
                ["function", "ms/step", "share", "calls/step"],
                [
                    [
                        p["function"],
                        p["ms_per_step"],
                        f"{p['share']:.0%}",
                        f"{p['calls_per_step']:g}",
                    ]
                    for p in profile
                ],
            ),
            "",
        ]
    end = machine()
    text = "\n".join(
        [
            f"# ba3c benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"Machine: {start['cores']} cores; 1-minute load average {start['load_average'][0]} at "
            f"start, {end['load_average'][0]} at end. Figures: median [min-max] of repeats; "
            "ratios within one run.",
            "",
            "## Targets",
            "",
            markdown(["target", "measured", "goal", "verdict"], targets),
            "",
            *sections,
            "## Load",
            "",
            *[f"- {n}" for n in notes],
        ]
    )
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(text + "\n")
    (RESULTS / "summary.json").write_text(
        json.dumps(
            {
                "machine_start": start,
                "machine_end": end,
                "runs": ran,
                "targets": [
                    dict(zip(["target", "measured", "goal", "verdict"], t, strict=True))
                    for t in targets
                ],
                "notes": notes,
                "pushpull_profile": profile,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS / 'summary.md'} and summary.json")
    return 1 if any(r["exit_code"] for r in ran.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
