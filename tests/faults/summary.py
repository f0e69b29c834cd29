"""The fault suite's summary: each injected fault, whether the run survived it, and how long
it took to recover. Printed at the end of the pytest session and written to
bench/results/faults.json (see conftest.py), so it shows in CI output."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.support import ROOT

RESULTS = ROOT / "bench" / "results" / "faults.json"


@dataclass
class Fault:
    case: str
    fault: str
    seed: int
    injected_after_s: float = 0.0  # the random moment, after training was seen moving
    survived: bool = False
    recover_s: float | None = None  # from the fault (or its end) to versions and frames moving
    details: dict = field(default_factory=dict)


FAULTS: list[Fault] = []


@contextlib.contextmanager
def injected(case: str, fault: str, seed: int):
    """Records one fault; it counts as survived only if the block finishes without error."""
    record = Fault(case, fault, seed)
    FAULTS.append(record)
    yield record
    record.survived = True


def recovered(record: Fault, since: float) -> None:
    record.recover_s = round(time.monotonic() - since, 2)


def table(faults: list[Fault]) -> str:
    rows = [("case", "fault", "seed", "survived", "recover s")]
    for f in faults:
        rows.append(
            (
                f.case,
                f.fault,
                str(f.seed),
                "yes" if f.survived else "NO",
                "-" if f.recover_s is None else f"{f.recover_s:.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    survived = sum(f.survived for f in faults)
    lines.append(f"faults injected: {len(faults)}, survived: {survived}")
    return "\n".join(lines)


def write(faults: list[Fault], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "injected": len(faults),
                "survived": sum(f.survived for f in faults),
                "faults": [asdict(f) for f in faults],
            },
            indent=1,
        )
        + "\n"
    )
