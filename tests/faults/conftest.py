"""Prints the fault suite's summary table at the end of the session (and saves it)."""

from __future__ import annotations

from tests.faults import summary


def pytest_terminal_summary(terminalreporter):
    if not summary.FAULTS:
        return
    terminalreporter.write_sep("=", "fault injection summary")
    terminalreporter.write_line(summary.table(summary.FAULTS))
    summary.write(summary.FAULTS)
    terminalreporter.write_line(f"(written to {summary.RESULTS})")
