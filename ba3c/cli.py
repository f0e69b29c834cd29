"""The `ba3c` command: one subcommand per service, plus the tools around a run.

Subcommands are looked up here by name and imported only when called, so `ba3c
paramserver` never pays for (or needs) TensorFlow, and `ba3c --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ba3c import config as configuration

# name -> ("module:function", one-line description). Each function takes argv and
# returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ba3c.launcher.main:main", "Run a whole training locally as processes."),
    "paramserver": ("services.paramserver.main:main", "Serve one parameter-server shard."),
    "learner": ("services.learner.main:main", "Serve Learner.Act, train, push to the shards."),
    "simulator": ("services.simulator.main:main", "Step a pool of environments for a learner."),
    "evaluator": ("services.evaluator.main:main", "Evaluate and record while a run trains."),
    "evaluate": ("services.evaluator.offline:main", "Evaluate a saved checkpoint, no cluster."),
    "monitor": ("ba3c.tools.monitor:main", "Start a local Prometheus watching a run."),
    "report": ("ba3c.tools.report:main", "Plot a run's scores, speed and losses to PNG files."),
    "conformance": (
        "ba3c.tools.conformance.main:main",
        "Check an implementation of a role against the contract.",
    ),
    "init-run": ("ba3c.cli:init_run", "Create a run directory: config.toml and secret."),
    "config": ("ba3c.cli:show_config", "Print the resolved configuration as TOML."),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: ba3c COMMAND [options]   (ba3c COMMAND --help for its options)", ""]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ba3c: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if not not_installed(e, module_name):
            raise  # a bug in the command's code: its traceback says where
        print(f"ba3c {name}: not available in this installation ({e})", file=sys.stderr)
        return 2
    return int(getattr(module, func_name)(rest) or 0)


def not_installed(error: ModuleNotFoundError, module_name: str) -> bool:
    """Whether importing `module_name` failed because something is not installed: a
    third-party package (TensorFlow without the [cpu] extra), or the command's own module.
    A module of ours that the command's code imports but that does not exist is a bug."""
    missing = error.name or ""
    if missing.split(".")[0] not in ("ba3c", "services"):
        return True
    return module_name == missing or module_name.startswith(missing + ".")


def _config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="A TOML file applied over the defaults.")
    configuration.add_flags(parser)
    return parser


def init_run(argv: Sequence[str]) -> int:
    """Creates RUN_DIR with the resolved config.toml and a fresh secret (kept if present)."""
    from ba3c.rundir import RunDir

    parser = _config_parser("ba3c init-run", init_run.__doc__ or "")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    try:
        cfg = configuration.load(args.config, args=args)
    except configuration.ConfigError as e:
        parser.exit(2, f"ba3c init-run: error: {e}\n")
    run_dir = RunDir(args.run_dir)
    wrote = run_dir.create(cfg)
    print(f"{run_dir.path}: " + ("created" if wrote else "exists, config.toml kept"))
    return 0


def show_config(argv: Sequence[str]) -> int:
    """Prints the configuration that these flags, variables and file resolve to."""
    parser = _config_parser("ba3c config", show_config.__doc__ or "")
    args = parser.parse_args(argv)
    try:
        cfg = configuration.load(args.config, args=args)
    except configuration.ConfigError as e:
        parser.exit(2, f"ba3c config: error: {e}\n")
    print(configuration.to_toml(cfg), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
