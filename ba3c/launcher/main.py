"""`ba3c train`: create (or resume) a run directory and run the whole topology locally.

    ba3c train -e CartPole-v1 --minutes 5          a new run under runs/
    ba3c train --resume runs/ba3c-20261125-101500  continue a stopped run

It starts the paramservers, learners, simulator pools and the evaluator as local
processes, shows a live view, restarts processes that die (within a budget), and on
Ctrl-C, SIGTERM or a reached bound stops them in order: pools first, paramservers last,
which write a final checkpoint. It ends by printing where everything is.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from ba3c import config as configuration
from ba3c.launcher import progress, topology
from ba3c.launcher.supervisor import Supervisor
from ba3c.rundir import RunDir, RunDirError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ba3c train",
        description="Run a whole ba3c training on this machine as local processes.",
    )
    where = parser.add_argument_group("run directory")
    where.add_argument("--run-dir", help="Where the run lives (default: runs/NAME-TIME/).")
    where.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="Continue a stopped run from its checkpoints, with its config.toml.",
    )
    where.add_argument("--config", help="A TOML file applied over the defaults (new runs).")
    bounds = parser.add_argument_group("when to stop (the first bound reached ends the run)")
    bounds.add_argument("--steps", type=int, help="Stop at this version (global step).")
    bounds.add_argument("--frames", type=int, help="Stop after this many environment frames.")
    bounds.add_argument("--minutes", type=float, help="Stop after this many minutes.")
    bounds.add_argument(
        "--stop-score", type=float, help="Stop once an evaluation's mean score reaches this."
    )
    view = parser.add_argument_group("display")
    view.add_argument(
        "--plain",
        action="store_true",
        help="Plain progress lines instead of the live table (default when "
        "standard output is not a terminal).",
    )
    view.add_argument(
        "--progress-every", type=float, default=10.0, help="Seconds between plain progress lines."
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="Restarts allowed per process before the run is given up.",
    )
    configuration.add_flags(parser)
    return parser


def explicitly_set(args: argparse.Namespace, environ) -> set[str]:
    names = {k.name for k in configuration.knobs() if getattr(args, k.name, None) is not None}
    names |= {k.name for k in configuration.knobs() if k.env_var in environ}
    return names


def prepare_run_dir(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunDir:
    """Creates a new run directory or opens the one to resume; exits 2 on bad usage."""
    if args.resume:
        run_dir = RunDir(args.resume)
        chosen = sorted(explicitly_set(args, {}))
        if chosen:
            parser.exit(
                EXIT_USAGE,
                f"ba3c train: error: --resume uses {run_dir.config_path}; "
                f"edit it instead of passing --{', --'.join(chosen)}\n",
            )
        if not run_dir.config_path.exists():
            parser.exit(
                EXIT_USAGE,
                f"ba3c train: error: {run_dir.path} is not a run directory (no config.toml)\n",
            )
        return run_dir.ensure()
    try:
        cfg = configuration.load(args.config, args=args)
    except configuration.ConfigError as e:
        parser.exit(EXIT_USAGE, f"ba3c train: error: {e}\n")
    if cfg.run.init_from and not Path(cfg.run.init_from).expanduser().exists():
        parser.exit(
            EXIT_USAGE, f"ba3c train: error: --init-from {cfg.run.init_from}: no such file\n"
        )
    topology.fit_to_machine(cfg, explicitly_set(args, os.environ))
    if args.run_dir:
        run_dir = RunDir(args.run_dir)
        if run_dir.config_path.exists():
            parser.exit(
                EXIT_USAGE,
                f"ba3c train: error: {run_dir.path} already holds a run; "
                f"continue it with --resume {args.run_dir}\n",
            )
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = RunDir(Path("runs") / f"{cfg.run.name}-{stamp}")
    run_dir.create(cfg)
    return run_dir


def bound_reached(args, snap: progress.Snapshot, elapsed: float) -> str | None:
    if args.minutes is not None and elapsed >= args.minutes * 60:
        return f"{args.minutes:g} minutes elapsed"
    if args.steps is not None and snap.versions and snap.version >= args.steps:
        return f"version {snap.version} reached --steps {args.steps}"
    if args.frames is not None and snap.env_frames >= args.frames:
        return f"{snap.env_frames} frames reached --frames {args.frames}"
    ev = snap.evaluation
    if args.stop_score is not None and ev and ev["mean"] >= args.stop_score:
        return f"evaluation score {ev['mean']:.1f} reached --stop-score {args.stop_score:g}"
    return None


class View:
    """The live table (rich) on a terminal, or a plain line every few seconds."""

    def __init__(self, plain: bool, every: float):
        self.plain = plain or not sys.stdout.isatty()
        self.every = every
        self._last_line = 0.0
        self._live = None

    def __enter__(self) -> View:
        if not self.plain:
            from rich.live import Live

            self._live = Live(refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def message(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text)
        else:
            print(text, flush=True)

    def show(self, fields: list[tuple[str, str]], processes: dict[str, str]) -> None:
        if self._live is not None:
            from rich.table import Table

            table = Table(show_header=False, box=None, title="ba3c train", title_justify="left")
            table.add_column(style="bold")
            table.add_column()
            for label, value in fields:
                table.add_row(label, value)
            table.add_row("processes", " ".join(f"{n}:{s}" for n, s in processes.items()))
            self._live.update(table)
        elif time.monotonic() - self._last_line >= self.every:
            self._last_line = time.monotonic()
            print(" | ".join(f"{label} {value}" for label, value in fields), flush=True)


def process_health(supervisor: Supervisor) -> dict[str, str]:
    out = {}
    for child in supervisor.children:
        state = "up" if child.alive() else "down"
        out[child.name] = state + (f"(restarts {child.restarts})" if child.restarts else "")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    run_dir = prepare_run_dir(args, parser)
    try:
        cfg = run_dir.load_config(environ={})
    except (configuration.ConfigError, RunDirError) as e:
        parser.exit(EXIT_USAGE, f"ba3c train: error: {e}\n")
    if cfg.net.tls:  # the run's CA, made once here; the services issue their own certificates
        from ba3c import rpc
        from ba3c.tls import RunTLS

        run_tls = RunTLS(run_dir)
        run_tls.ensure_ca()
        rpc.use_tls(run_tls)

    stop = threading.Event()
    reason = {"why": ""}

    def on_signal(signum, _frame):
        reason["why"] = f"{signal.Signals(signum).name} received"
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print(f"run directory: {run_dir.path}" + (" (resumed)" if args.resume else ""), flush=True)
    supervisor = Supervisor(run_dir, topology.plan(cfg, args.max_restarts))
    observer = progress.Observer(run_dir, cfg.paramserver.ps)
    started = time.monotonic()
    code = EXIT_OK
    with View(args.plain, args.progress_every) as view:
        supervisor.report = view.message
        supervisor.start()
        before: progress.Snapshot | None = None
        while not stop.wait(1.0):
            supervisor.poll()
            if supervisor.failed:
                reason["why"], code = supervisor.failed, EXIT_FAILED
                break
            snap = observer.snapshot()
            elapsed = time.monotonic() - started
            view.show(
                progress.summary_fields(snap, before, elapsed, progress.online_score(snap, before)),
                process_health(supervisor),
            )
            before = snap
            why = bound_reached(args, snap, elapsed)
            if why:
                reason["why"] = why
                break
        if stop.is_set() and code == EXIT_OK:
            code = EXIT_INTERRUPTED
        view.message(f"stopping: {reason['why']}")
        final = observer.snapshot()
        supervisor.stop()
        observer.close()
    print_where(run_dir, final, time.monotonic() - started)
    return code


def print_where(run_dir: RunDir, snap: progress.Snapshot, elapsed: float) -> None:
    checkpoints = sorted(run_dir.sub("checkpoints").rglob("*.ckpt"))
    videos = sorted(run_dir.sub("videos").glob("*.mp4"))
    ev = snap.evaluation
    lines = [
        f"ran {progress.fmt_duration(elapsed)}: version {snap.version}, "
        f"{progress.fmt_count(snap.env_frames)} env frames"
        + (f", last evaluation {ev['mean']:.1f}" if ev else ""),
        f"run directory: {run_dir.path}",
        f"checkpoints:   {run_dir.sub('checkpoints')} ({len(checkpoints)} files)",
        f"videos:        {run_dir.sub('videos')} ({len(videos)} files)",
        f"tensorboard:   tensorboard --logdir {run_dir.sub('tensorboard')}",
        f"logs:          {run_dir.sub('logs')}",
        f"resume with:   ba3c train --resume {run_dir.path}",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
