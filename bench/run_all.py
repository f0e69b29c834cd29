"""`make bench`: the quick variant of every benchmark, then one table of targets.

    .venv/bin/python bench/run_all.py [--only simulator paramserver learner capacity]
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
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, fmt, machine, markdown  # noqa: E402

# name -> the quick variant's arguments (a few minutes in all on 2 cores)
QUICK = {
    "simulator": ["--envs", "16", "--repeats", "3", "--seconds", "2"],
    "paramserver": ["--shards", "1", "2", "4", "--repeats", "3", "--steps", "10"],
    "learner": ["--seconds", "30", "--windows", "3"],
    "capacity": ["--learners", "1", "2", "4", "8", "16", "--seconds", "2", "--repeats", "3"],
}
TARGETS = {"limit": 0.80, "transport": 0.30, "simulator": 0.90}


def run(name: str) -> dict:
    """Runs bench/NAME.py's quick variant; returns what happened around it."""
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *QUICK[name]]
    print(f"\n## {name}: {' '.join(command[1:])}\n", flush=True)
    before, started = machine(), time.monotonic()
    code = subprocess.call(command, cwd=ROOT)
    return {"command": " ".join(["python", *command[1:]]), "exit_code": code,
            "seconds": round(time.monotonic() - started, 1),
            "load_before": before["load_average"], "load_after": machine()["load_average"]}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def limit_rows(result: dict) -> list[list[str]]:
    def raw(key: str) -> dict:
        values = [result["raw_before"][key], result["raw_after"][key]]
        return {"median": sum(values) / 2, "min": min(values), "max": max(values)}

    e2e = result.get("end_to_end_windows") or {"median": result["end_to_end_steps_per_s"],
                                               "min": result["end_to_end_steps_per_s"],
                                               "max": result["end_to_end_steps_per_s"]}
    rows = [
        ["limit", f"E: env steps/s ({result['envs_per_pool']} envs)", fmt(raw("E")), ""],
        ["limit", f"I: inference samples/s (batch {result['predict_batch']})", fmt(raw("I")), ""],
        ["limit", f"T: train samples/s (batch {result['batch_size']})", fmt(raw("T")), ""],
        ["limit", "L = 1/(1/E+1/I+1/T), agent steps/s", f"{result['limit_steps_per_s']:,.0f}", ""],
        ["limit", f"end-to-end `ba3c train` agent steps/s ({result['pools']} pool)", fmt(e2e),
         ""],
        ["limit", "end-to-end / L", f"{result['ratio']:.2f}",
         f">= {TARGETS['limit']:.2f} {verdict(result['ratio'] >= TARGETS['limit'])}"],
    ]
    return rows


def transport_rows(result: dict) -> list[list[str]]:
    rows = []
    by = {(r["shards"], r["variant"], r["grad_dtype"]): r for r in result["rows"]}
    for (shards, variant, dtype), r in sorted(by.items()):
        if variant == "raw":
            continue
        raw = by[(shards, "raw", dtype)]
        overhead = r["ratio_to_raw"] - 1
        what = ("as a learner calls it (stub: encode, PushPull, decode)" if variant == "stub"
                else "shard side only (pre-serialised bytes)")
        target = (f"< {TARGETS['transport']:.0%} {verdict(overhead < TARGETS['transport'])}"
                  if variant == "stub" else "")
        rows.append(["transport", f"PushPull {shards} shard(s), {dtype} grads, {what}: "
                     f"ms [min-max] vs raw gRPC {raw['median_ms']} ms",
                     f"{r['median_ms']} [{r['min_ms']}-{r['max_ms']}] ms, overhead "
                     f"{overhead:+.0%}", target])
    return rows


def simulator_rows(result: dict) -> list[list[str]]:
    rows = []
    for r in result["results"]:
        ratio = r["ratio_of_medians"]
        rows.append(["simulator", f"pool of {r['num_envs']} envs over gRPC / raw stepping "
                     f"(raw {fmt(r['raw'])}, grpc {fmt(r['grpc'])} steps/s)", f"{ratio:.2f}",
                     f">= {TARGETS['simulator']:.2f} {verdict(ratio >= TARGETS['simulator'])}"
                     if r["num_envs"] == 16 else ""])
    return rows


def knee(rows: list[dict]) -> int:
    """The learner count after which adding learners adds < 10% applied pushes/s."""
    rows = sorted(rows, key=lambda r: r["learners"])
    for prev, nxt in zip(rows, rows[1:], strict=False):
        if nxt["applied_per_s"]["median"] < 1.1 * prev["applied_per_s"]["median"]:
            return prev["learners"]
    return rows[-1]["learners"]


def capacity_rows(result: dict) -> list[list[str]]:
    rows = []
    for mode in ("async", "sync"):
        mine = [r for r in result["rows"] if r["mode"] == mode]
        if not mine:
            continue
        for r in mine:
            rows.append(["capacity", f"{mode}, {r['learners']} learner(s): applied pushes/s; "
                         f"p50 / p99 ms; shard CPU ms/push",
                         f"{fmt(r['applied_per_s'], 1)}; {fmt(r['p50_ms'], 1)} / "
                         f"{fmt(r['p99_ms'], 1)}; {fmt(r['shard_cpu_ms_per_push'], 1)}", ""])
        rows.append(["capacity", f"{mode}: knee (more learners add < 10% pushes/s)",
                     f"N = {knee(mine)}", ""])
    return rows


SECTIONS = {"learner": limit_rows, "paramserver": transport_rows,
            "simulator": simulator_rows, "capacity": capacity_rows}


def machine_line(name: str, result: dict, ran: dict | None) -> str:
    if ran:
        return (f"{name}: load {ran['load_before'][0]:.1f} before / {ran['load_after'][0]:.1f} "
                f"after, {ran['seconds']:.0f} s, exit {ran['exit_code']}")
    m = result.get("machine") or result.get("machine_before") or {}
    load_avg = m.get("load_average") or m.get("load_avg_at_start") or m.get(
        "load_average_at_start") or result.get("load_average_1min")
    return f"{name}: (not re-run) load {load_avg}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(QUICK), default=list(QUICK))
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args(argv)

    start = machine()
    ran: dict[str, dict] = {}
    if not args.summarise_only:
        for name in args.only:
            ran[name] = run(name)
    rows, notes, results = [], [], {}
    for name in QUICK:
        result = load(name)
        if result is None:
            notes.append(f"{name}: no results (bench/results/{name}.json missing)")
            continue
        if name in ran and ran[name]["exit_code"] != 0:
            notes.append(f"{name}: FAILED (exit {ran[name]['exit_code']}); older results shown")
        results[name] = result
        rows += SECTIONS[name](result)
        notes.append(machine_line(name, result, ran.get(name)))
    end = machine()
    text = "\n".join([
        f"# ba3c benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
        f"Machine: {start['cores']} cores; 1-minute load average {start['load_average'][0]} at "
        f"start, {end['load_average'][0]} at end. Figures: median [min-max] of repeats; "
        "ratios within one run.", "",
        markdown(["benchmark", "figure", "value", "target"], rows), "",
        *[f"- {n}" for n in notes],
    ])
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(text + "\n")
    (RESULTS / "summary.json").write_text(json.dumps({
        "machine_start": start, "machine_end": end, "runs": ran,
        "rows": [dict(zip(["benchmark", "figure", "value", "target"], r, strict=True))
                 for r in rows],
        "notes": notes}, indent=1) + "\n")
    print(f"\nwrote {RESULTS / 'summary.md'} and summary.json")
    return 1 if any(r["exit_code"] for r in ran.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
