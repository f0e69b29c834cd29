"""`ba3c monitor`: a local Prometheus for one run, configured from the monitoring/ files.

    ba3c monitor --run-dir runs/ba3c-20261125-101500          serve it on 127.0.0.1:9090
    ba3c monitor --run-dir A --run-dir B --print-config      a config for a site's Prometheus

The configuration is monitoring/prometheus.yml with its placeholder targets line replaced by
each run's RUN_DIR/targets/*.json and its rule files made absolute, so the recording and
alerting rules in monitoring/rules/ apply as they would on a site's Prometheus. It runs
Debian's `prometheus` binary (apt-get install prometheus) as a child process, keeps its
data in RUN_DIR/monitoring/ (so a second `ba3c monitor` still shows the first's history),
prints the URL and stops it on Ctrl-C. It is a tool next to a run, not a service: it
publishes no target and needs no token.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import ba3c


def monitoring_dir(candidates: Sequence[Path] | None = None) -> Path:
    """The folder with prometheus.yml and rules/: monitoring/ of the checkout this package
    runs from, else the copy a wheel installs in PREFIX/share/ba3c/monitoring (see
    pyproject.toml); the first candidate if none has it (the error then names it)."""
    if candidates is None:
        share = Path("share") / "ba3c" / "monitoring"
        candidates = [
            Path(ba3c.__file__).resolve().parent.parent / "monitoring",
            Path(sysconfig.get_path("data")) / share,
            Path(sys.prefix) / share,
            Path(site.getuserbase()) / share,
        ]
    for folder in candidates:
        if (folder / "prometheus.yml").is_file():
            return folder
    return candidates[0]


MONITORING = monitoring_dir()
TEMPLATE = MONITORING / "prometheus.yml"
# The line of the template that names the targets; replaced by one line per run.
TARGETS_PLACEHOLDER = "/srv/ba3c/runs/RUN/targets/*.json"
DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h)$")
INSTALL_HINT = (
    "install Debian's package (apt-get install --no-install-recommends prometheus) "
    "or pass --prometheus PATH"
)


class MonitorError(RuntimeError):
    """Something that stops the monitor; the message says what to do."""


def targets_pattern(run_dir: Path) -> str:
    """The file_sd pattern of one run's target files."""
    return str(Path(run_dir).resolve() / "targets" / "*.json")


def render_config(
    template: str,
    patterns: Sequence[str],
    rules_base: Path,
    scrape_interval: str | None = None,
) -> str:
    """The template with its targets placeholder replaced by `patterns`, relative rule files
    made absolute against `rules_base`, and optionally every interval set to
    `scrape_interval` (scrape timeout included, which must not exceed it)."""
    if TARGETS_PLACEHOLDER not in template:
        raise MonitorError(
            f"the Prometheus template has no line naming {TARGETS_PLACEHOLDER!r} "
            "to replace with the runs' target files"
        )
    if not patterns:
        raise MonitorError("no run directories given")
    lines: list[str] = []
    in_rule_files = False
    for line in template.splitlines():
        stripped = line.strip()
        if TARGETS_PLACEHOLDER in line:
            indent = line[: len(line) - len(line.lstrip())]
            lines += [f"{indent}- {json.dumps(p)}" for p in patterns]
            continue
        if stripped.startswith("rule_files:"):
            in_rule_files = True
        elif in_rule_files and stripped.startswith("- "):
            path = stripped[2:].strip().strip("'\"")
            if not Path(path).is_absolute():
                indent = line[: len(line) - len(line.lstrip())]
                line = f"{indent}- {json.dumps(str(Path(rules_base).resolve() / path))}"
        elif stripped and not stripped.startswith("#"):
            in_rule_files = False
        if scrape_interval is not None:
            line = re.sub(
                r"^(\s*(?:scrape_interval|scrape_timeout|evaluation_interval):\s*)\S+",
                lambda m: m.group(1) + scrape_interval,
                line,
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def config_for_runs(
    run_dirs: Sequence[Path], scrape_interval: str | None = None, template: Path = TEMPLATE
) -> str:
    """The repository's (or `template`'s) configuration for these run directories."""
    try:
        text = Path(template).read_text()
    except OSError as e:
        raise MonitorError(f"cannot read the Prometheus template {template}: {e.strerror}") from e
    if scrape_interval is not None and not DURATION.match(scrape_interval):
        raise MonitorError(
            f"--scrape-interval {scrape_interval!r} is not a Prometheus duration "
            "such as 5s, 500ms or 1m"
        )
    return render_config(
        text,
        [targets_pattern(d) for d in run_dirs],
        Path(template).resolve().parent,
        scrape_interval,
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_binary(name: str, explicit: str | None = None) -> str:
    found = shutil.which(explicit or name)
    if not found:
        what = f"{explicit!r} is not an executable" if explicit else f"no {name!r} on PATH"
        raise MonitorError(f"{what}; {INSTALL_HINT}")
    return found


class LocalPrometheus:
    """One Prometheus child process serving `config_text` on host:port, data in `state_dir`.

    Files in `state_dir`: prometheus.yml (the configuration), prometheus.log (its output),
    data/ (the time series). Port 0 picks a free port.
    """

    def __init__(
        self,
        config_text: str,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: str | None = None,
    ):
        self.binary = find_binary("prometheus", binary)
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port or free_port(host)
        self.config_path = self.state_dir / "prometheus.yml"
        self.log_path = self.state_dir / "prometheus.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text)
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{shown}:{self.port}"

    def start(self) -> LocalPrometheus:
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.state_dir / 'data'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Polls /-/ready; raises MonitorError if Prometheus exits or is not ready in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise MonitorError(
                    f"prometheus exited with code {self.exit_code()}; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise MonitorError(
            f"prometheus at {self.url} was not ready after {timeout}s; see {self.log_path}"
        )

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ba3c monitor",
        description="Start a local Prometheus that scrapes a run's processes, with the "
        "repository's recording and alerting rules; Ctrl-C stops it.",
    )
    parser.add_argument(
        "--run-dir",
        action="append",
        required=True,
        metavar="DIR",
        help="A run directory to watch (repeat for several runs).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address Prometheus listens on (0.0.0.0: every interface).",
    )
    parser.add_argument(
        "--port", type=int, default=9090, help="Port Prometheus listens on (0: any free port)."
    )
    parser.add_argument(
        "--scrape-interval",
        metavar="DURATION",
        help="Scrape and rule evaluation interval, e.g. 1s (default: the template's).",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="Where the configuration, log and data go (default: "
        "RUN_DIR/monitoring/ of the first run).",
    )
    parser.add_argument("--prometheus", metavar="PATH", help="The prometheus binary to run.")
    parser.add_argument(
        "--template",
        default=str(TEMPLATE),
        metavar="FILE",
        help="The Prometheus configuration to start from.",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="Print the generated configuration and exit (for a site's Prometheus).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    run_dirs = [Path(d).resolve() for d in args.run_dir]
    try:
        for d in run_dirs:
            if not d.is_dir():
                raise MonitorError(f"run directory {d} does not exist")
        if not 0 <= args.port <= 65535:
            raise MonitorError(f"--port must be in 0..65535, got {args.port}")
        config_text = config_for_runs(run_dirs, args.scrape_interval, Path(args.template))
        if args.print_config:
            print(config_text, end="")
            return 0
        state_dir = Path(args.state_dir) if args.state_dir else run_dirs[0] / "monitoring"
        prometheus = LocalPrometheus(config_text, state_dir, args.host, args.port, args.prometheus)
    except MonitorError as e:
        parser.exit(2, f"ba3c monitor: error: {e}\n")
    return serve(prometheus, run_dirs)


def serve(prometheus: LocalPrometheus, run_dirs: Sequence[Path]) -> int:
    """Runs Prometheus until Ctrl-C/SIGTERM (exit 0) or until it dies (exit 1)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    prometheus.start()
    try:
        prometheus.wait_ready()
        names = ", ".join(d.name for d in run_dirs)
        print(
            f"Prometheus for {names}: {prometheus.url}\n"
            f"  targets: {prometheus.url}/targets   alerts: {prometheus.url}/alerts\n"
            f"  data and log: {prometheus.state_dir}\n"
            "  Ctrl-C stops it.",
            flush=True,
        )
        while not stop.wait(0.5):
            if not prometheus.alive():
                raise MonitorError(
                    f"prometheus exited with code {prometheus.exit_code()}; "
                    f"its log ends with:\n{prometheus.log_tail()}"
                )
    except MonitorError as e:
        print(f"ba3c monitor: error: {e}", file=sys.stderr)
        return 1
    finally:
        prometheus.stop()
    print("Prometheus stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
