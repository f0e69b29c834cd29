"""SIGTERM always stops a service, even when it lands in the middle of a log write."""

import signal
import subprocess
import sys

from tests.support import wait_for

LOOP = """
import sys, structlog
from ba3c.service import stop_on_signals
from ba3c.telemetry import configure_logging
configure_logging(sys.argv[1], run="r", role="t", index=0)
stop = stop_on_signals()
print("ready", flush=True)
while not stop.is_set():
    structlog.get_logger().info("busy", payload="x" * 2000)
print("stopped", flush=True)
"""


def test_sigterm_during_a_log_write_never_hangs(tmp_path):
    for attempt in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOP, str(tmp_path / f"{attempt}.log")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            wait_for(
                lambda a=attempt: (tmp_path / f"{a}.log").stat().st_size > 100_000,
                30,
                "the loop to be logging",
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, f"attempt {attempt}: did not stop"
            assert proc.stdout.read().strip() == "stopped"
        finally:
            proc.kill()
            proc.wait()


def test_usr1_and_usr2_stop_a_service_like_sigterm():
    """`scancel --signal=USR1 JOB` reaches every task: it must stop them cleanly, not kill."""
    import os

    from ba3c.service import STOP_SIGNALS, stop_on_signals

    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            stop = stop_on_signals()
            os.kill(os.getpid(), sig)
            assert stop.wait(5), signal.Signals(sig).name
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
