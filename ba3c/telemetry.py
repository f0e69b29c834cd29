"""Logs and metrics for every process: structlog JSON lines and a Prometheus endpoint.

`setup(run_dir, role, index)` is the first thing a service does: it sends JSON lines to
RUN_DIR/logs/ROLE-I.log (and a short human-readable form to stderr), binds run/role/index
to every line, starts the /metrics HTTP server on a free port and publishes it in
RUN_DIR/targets/ROLE-I.json for Prometheus' file_sd.

Metrics themselves are declared once at module level in each service, named
`ba3c_<what>_<unit>`; they carry no run/role/index labels of their own: Prometheus attaches
those from the target file, so nothing clashes.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import prometheus_client
import structlog

from ba3c.rundir import RunDir

log = structlog.get_logger()


@dataclass
class Telemetry:
    run_dir: RunDir
    role: str
    index: int
    metrics_address: str | None
    _server: object = None

    def close(self) -> None:
        """Withdraws the Prometheus target and stops the metrics server."""
        self.run_dir.remove_target(self.role, self.index)
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def configure_logging(log_file: Path | None, level: int = logging.INFO, **bound) -> None:
    """JSON lines to `log_file` (append), key=value lines to stderr; `bound` on every line."""

    def add_identity(_logger, _method, event):
        # fixed for the process, so added to every line from every thread (contextvars
        # would not reach threads started later)
        for key, value in bound.items():
            event.setdefault(key, value)
        return event

    processors = [
        structlog.contextvars.merge_contextvars,
        add_identity,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    json_renderer = structlog.processors.JSONRenderer()
    console_renderer = structlog.dev.ConsoleRenderer(colors=False)
    file_handle = open(log_file, "a", buffering=1) if log_file else None  # noqa: SIM115

    def render(logger, method, event):
        line = json_renderer(logger, method, dict(event))
        if file_handle is not None:
            file_handle.write(line + "\n")
        return console_renderer(logger, method, event)

    structlog.configure(
        processors=[*processors, render],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()


def start_metrics(host: str = "127.0.0.1", port: int = 0) -> tuple[object, int]:
    """Serves the default Prometheus registry over HTTP; returns (server, bound port)."""
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return server, server.server_port


def setup(
    run_dir: RunDir,
    role: str,
    index: int,
    host: str = "127.0.0.1",
    metrics: bool = True,
    advertise: str | None = None,
) -> Telemetry:
    """Logging to RUN_DIR/logs/ and /metrics bound on `host`, published in targets/ as
    `advertise` (default: `host`)."""
    run_dir.ensure()
    configure_logging(run_dir.log_path(role, index), run=run_dir.path.name, role=role, index=index)
    server, address = None, None
    if metrics:
        server, port = start_metrics(host)
        address = f"{advertise or host}:{port}"
        run_dir.write_target(role, index, address)
    log.info("telemetry ready", metrics=address, log_file=str(run_dir.log_path(role, index)))
    return Telemetry(run_dir, role, index, address, server)
