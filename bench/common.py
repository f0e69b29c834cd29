"""Helpers shared by the benchmark scripts: medians with their spread, machine facts, tables.

Every figure a benchmark publishes is the median of repeated runs with the min and max
next to it, and every ratio is taken between figures measured in the same run; the
machine's cores and load average are recorded with them (see bench/README.md).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def spread(values: Sequence[float]) -> dict[str, float | list[float]]:
    """{"median", "min", "max", "runs"} of repeated measurements (at least one)."""
    if not values:
        raise ValueError("spread() needs at least one measurement")
    runs = [float(v) for v in values]
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def window_rates(
    read: Callable[[], Sequence[float]], seconds: float, windows: int
) -> list[list[float]]:
    """Per window of seconds / windows: (counter after - before) / elapsed for each counter
    `read()` returns, i.e. [[rate of counter 0, rate of counter 1, ...], ...]."""
    out = []
    for _ in range(windows):
        before, t0 = read(), time.perf_counter()
        time.sleep(seconds / windows)  # a rate over a fixed window
        after, t1 = read(), time.perf_counter()
        out.append([(b - a) / (t1 - t0) for a, b in zip(before, after, strict=True)])
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt(s: dict, digits: int = 0, scale: float = 1.0) -> str:
    """'median [min-max]' of a spread()."""
    return (
        f"{s['median'] * scale:,.{digits}f} "
        f"[{s['min'] * scale:,.{digits}f}-{s['max'] * scale:,.{digits}f}]"
    )


def machine() -> dict:
    """Cores this process may use, the 1/5/15-minute load averages and versions."""
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds all threads of `pid` have run so far (/proc/PID/task/*/schedstat).

    Unlike wall-clock latency this barely depends on what else the machine runs, so it
    gives a capacity figure even on a loaded machine.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


def stop_process_groups(procs: Sequence[subprocess.Popen], grace: float = 20.0) -> None:
    """SIGTERM each child's process group, then SIGKILL the ones still there after `grace`."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def write_report(path: Path, report: dict) -> None:
    """Writes a benchmark's JSON report (creating its folder) and says where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {path}")
