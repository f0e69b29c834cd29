"""`ba3c evaluate`: evaluates a saved checkpoint on this machine, with no cluster at all.

    ba3c evaluate --checkpoint runs/breakout --episodes 10 --record

PATH is a run directory (its config.toml gives the model and environment settings) or its
checkpoints/ folder (the run directory's config.toml is then found next to it); flags
override any setting, e.g. `--env`, `--eval_greedy`, `--seed`. The episodes, their seeds and
the statistics are the same as the evaluator service's, so a fixed seed gives the service's
score for the same version. Prints a summary (or, with --json, the eval.jsonl record).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ba3c import config as configuration
from ba3c import telemetry

PROG = "ba3c evaluate"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="A run directory or its checkpoints/ folder.",
    )
    parser.add_argument(
        "--episodes",
        dest="eval_episodes",
        metavar="N",
        default=None,
        help="Episodes to play (same as --eval_episodes).",
    )
    parser.add_argument(
        "--record",
        dest="record_node",
        action="store_const",
        const=True,
        default=None,
        help="Save the first episode as an MP4 (--record_node).",
    )
    parser.add_argument(
        "--greedy",
        dest="eval_greedy",
        action="store_const",
        const=True,
        default=None,
        help="Play the greedy policy (same as --eval_greedy).",
    )
    parser.add_argument(
        "--video-dir", default="videos", metavar="DIR", help="Where --record puts the video."
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="Print the result as one JSON line (the eval.jsonl format).",
    )
    configuration.add_flags(parser)
    return parser


def find_config(path: Path) -> Path | None:
    """config.toml of the run that `path` (run dir, checkpoints/ or a shard's folder) is in."""
    for folder in (path, path.parent, path.parent.parent):
        candidate = folder / "config.toml"
        if candidate.is_file():
            return candidate
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    path = Path(args.checkpoint)
    if not path.exists():
        parser.exit(2, f"{PROG}: error: --checkpoint {path} does not exist\n")
    try:
        cfg = configuration.load(find_config(path.resolve()), args=args)
    except configuration.ConfigError as e:
        parser.exit(2, f"{PROG}: error: {e}\n")

    telemetry.configure_logging(None)  # log lines to stderr; stdout is the result
    from ba3c import checkpoint, envs, models, sharding  # TensorFlow is imported only now
    from services.evaluator.evaluation import Evaluation

    try:
        pieces, version, env_frames = checkpoint.load_run_parameters(path)
    except (OSError, ValueError, KeyError) as e:
        parser.exit(2, f"{PROG}: error: cannot load parameters from {path}: {e}\n")
    models.configure_threads(cfg.learner.threads)
    video_dir = Path(args.video_dir) if cfg.evaluator.record_node else None
    try:
        evaluation = Evaluation(cfg, video_dir)
    except (envs.EnvError, models.ModelError) as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    try:
        # joined by piece names: any shard layout, and checkpoints/best's whole variables
        weights = sharding.join_by_names(pieces)
        missing = sorted(set(evaluation.model.variables_by_name) - set(weights))
        if missing:
            raise KeyError(f"no values for {missing}")
        result = evaluation.run(weights, version, env_frames)
    except (KeyError, ValueError, models.ModelError) as e:
        parser.exit(
            2,
            f"{PROG}: error: the checkpoint does not fit the model of this "
            f"configuration ({e}); pass the run directory or the same model flags\n",
        )
    finally:
        evaluation.close()
    if args.json:
        print(json.dumps(result.record()))
    else:
        print(summary(result, cfg.run.env, video_dir))
    return 0


def summary(result, env: str, video_dir: Path | None) -> str:
    s = result.stats
    text = (
        f"{env} version {result.version} ({result.env_frames} frames): "
        f"mean {s.mean:.2f} std {s.std:.2f} min {s.min:g} max {s.max:g} "
        f"over {len(result.episodes)} episodes, mean length {result.mean_length:.0f} steps, "
        f"{'greedy' if result.greedy else 'sampled'} actions, {result.seconds:.1f} s"
    )
    if video_dir is not None and result.video:
        text += f"\nvideo: {video_dir / result.video}"
    return text


if __name__ == "__main__":
    sys.exit(main())
