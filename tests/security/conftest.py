"""Prints how many malformed inputs the bad-input tests tried (and saves the count)."""

from __future__ import annotations

import json

from tests.security.malformed import TRIED
from tests.support import ROOT

RESULTS = ROOT / "bench" / "results" / "bad_input.json"


def pytest_terminal_summary(terminalreporter):
    if not TRIED:
        return
    terminalreporter.write_sep("=", "bad input summary")
    for target, count in sorted(TRIED.items()):
        terminalreporter.write_line(f"{target:<40} {count:>6}")
    total = sum(TRIED.values())
    terminalreporter.write_line(f"{'malformed inputs tried':<40} {total:>6}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"total": total, "by_target": dict(TRIED)}, indent=1) + "\n")
