"""Logging: every line, from every thread, says which run, role and index wrote it."""

import json
import subprocess
import sys


def test_log_lines_from_any_thread_carry_run_role_and_index(tmp_path):
    code = (
        "import threading, structlog\n"
        "from ba3c.telemetry import configure_logging\n"
        f"configure_logging({str(tmp_path / 'x.log')!r}, run='r1', role='learner', index=3)\n"
        "t = threading.Thread(target=lambda: structlog.get_logger().info('from thread'))\n"
        "t.start(); t.join()\n"
        "structlog.get_logger().info('from main')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    lines = [json.loads(line) for line in (tmp_path / "x.log").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["from thread", "from main"]
    for line in lines:
        assert (line["run"], line["role"], line["index"]) == ("r1", "learner", 3)
