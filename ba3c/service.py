"""What every service does before its own work: flags, config, telemetry, token, signals.

A service's `main(argv)` calls `start(argv, role=..., description=...)` and gets a
`ServiceContext`: the parsed flags, the run's resolved configuration (config.toml ->
BA3C_* -> flags), the run directory, the token, telemetry already running, and a `stop`
event that SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 set. Bad flags, unusable run directories
and addresses that could not work (ba3c/netaddr.py) end the process here with a one-line
message (exit code 2), before anything was started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from ba3c import config as configuration
from ba3c import netaddr, rpc, telemetry
from ba3c.rundir import RunDir, RunDirError

log = structlog.get_logger()


class UsageError(Exception):
    """A problem the user fixes by changing how they call us; printed as one line."""


@dataclass
class ServiceContext:
    args: argparse.Namespace
    cfg: configuration.Config
    run_dir: RunDir
    token: str
    index: int
    role: str
    host: str  # bound
    advertise: str  # written to RUN_DIR/addresses/ and targets/
    telemetry: telemetry.Telemetry
    stop: threading.Event

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


def make_parser(
    prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run-dir", required=True, help="The run directory (see DESIGN.md).")
    parser.add_argument("--index", type=int, default=0, help="Index of this process in its role.")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="Port to listen on (0: any free port, published in RUN_DIR/addresses/).",
    )
    if add_arguments is not None:
        add_arguments(parser)
    configuration.add_flags(parser)
    return parser


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 (main thread only)."""
    stop = threading.Event()
    received: list[str] = []

    def handler(signum, _frame):
        # Only set the event here: a handler that logged could wait forever on the log
        # file's lock if the signal arrived while the main thread held it.
        received.append(signal.Signals(signum).name)
        stop.set()

    def announce():
        stop.wait()
        if received:
            log.info("signal received, stopping", signal=received[0])

    threading.Thread(target=announce, name="signal-announcer", daemon=True).start()

    # USR1/USR2 too: `scancel --signal=USR1 JOB` and `--signal=USR1@T` (without B:) reach
    # every task, and their default action would end the process without a checkpoint.
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    return stop


def start(
    argv: Sequence[str] | None,
    role: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> ServiceContext:
    parser = make_parser(f"ba3c {role}", description, add_arguments)
    args = parser.parse_args(argv)
    try:
        run_dir = RunDir(args.run_dir)
        if not run_dir.path.is_dir():
            raise UsageError(f"run directory {run_dir.path} does not exist")
        cfg = run_dir.load_config(args=args)
        token = run_dir.read_secret()
        if cfg.net.tls:
            from ba3c.tls import RunTLS  # only runs that ask for TLS pay for importing it

            run_tls = RunTLS(run_dir)
            run_tls.check()
            rpc.use_tls(run_tls)
        if args.index < 0:
            raise UsageError(f"--index must be >= 0, got {args.index}")
        net = cfg.net
        where = netaddr.endpoint(net.host, net.advertise_host, net.net_interface)
    except (configuration.ConfigError, RunDirError, UsageError, netaddr.AddressError) as e:
        parser.exit(2, f"ba3c {role}: error: {e}\n")
    tele = telemetry.setup(
        run_dir,
        role,
        args.index,
        host=where.bind,
        metrics=cfg.net.metrics,
        advertise=where.advertise,
    )
    return ServiceContext(
        args=args,
        cfg=cfg,
        run_dir=run_dir,
        token=token,
        index=args.index,
        role=role,
        host=where.bind,
        advertise=where.advertise,
        telemetry=tele,
        stop=stop_on_signals(),
    )


def fail(role: str, message: str) -> int:
    """Prints a one-line error for the user and returns the exit code to use."""
    print(f"ba3c {role}: error: {message}", file=sys.stderr)
    return 2
