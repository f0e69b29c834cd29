"""`ba3c evaluator`: evaluates (and records) the parameters of a run while it trains.

It registers with every paramserver shard as EVALUATOR and only ever pulls. An evaluation
starts when the parameters moved since the previous one and either `eval_every` seconds
have passed since that one started or the version advanced by `eval_every_versions`
(if set); the first starts as soon as every shard is initialized. Each evaluation plays
`eval_episodes` episodes (sampled or greedy actions, cut at `eval_max_steps`) and goes to
RUN_DIR/eval.jsonl, TensorBoard (RUN_DIR/tensorboard/eval/), Prometheus and the log; with
`--record_node` (or `--record`) its first episode is saved as an MP4 in RUN_DIR/videos/.

SIGTERM lets the evaluation in progress finish and be reported, then the process exits 0.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import structlog

from ba3c import rpc, service

log = structlog.get_logger()

ROLE = "evaluator"
VERSION_POLL = 1.0  # seconds between looks at the shards while no evaluation is due


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--record",
        dest="record_node",
        action="store_const",
        const=True,
        default=None,
        help="Same as --record_node: save the first episode of each evaluation as an MP4.",
    )


class Schedule:
    """When the next evaluation is due (see the module docstring)."""

    def __init__(self, every_seconds: float, every_versions: int):
        self.every_seconds = every_seconds
        self.every_versions = every_versions
        self.last_versions: tuple[int, ...] | None = None
        self.last_started = float("-inf")

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.last_started + self.every_seconds - now)

    def due(self, versions: tuple[int, ...], now: float) -> bool:
        if versions == self.last_versions:
            return False
        if self.last_versions is None or self.seconds_left(now) == 0:
            return True
        return self.every_versions > 0 and (
            min(versions) - min(self.last_versions) >= self.every_versions
        )

    def started(self, versions: tuple[int, ...], now: float) -> None:
        self.last_versions = versions
        self.last_started = now


def main(argv: Sequence[str] | None = None) -> int:
    ctx = service.start(
        argv, ROLE, "Evaluate and record the parameters of a run while it trains.", add_arguments
    )
    # TensorFlow is imported only now, after the flags were checked.
    from ba3c import envs, models
    from ba3c.paramserver_client import ParamServerError

    try:
        evaluations = _serve(ctx)
    except (ParamServerError, envs.EnvError, models.ModelError) as e:
        log.error("cannot read the parameters", error=str(e))
        return service.fail(ROLE, str(e))
    finally:
        ctx.telemetry.close()
    log.info("evaluator stopped", evaluations=evaluations)
    return 0


def _serve(ctx: service.ServiceContext) -> int:
    """Evaluates until stopped; returns how many evaluations it made."""
    from ba3c import models
    from ba3c.paramserver_client import Stopped
    from services.evaluator import metrics
    from services.evaluator.best import BestKeeper
    from services.evaluator.evaluation import Stopped as EvaluationStopped
    from services.evaluator.pulling import shard_reader
    from services.evaluator.tboard import EvalSummaries

    cfg = ctx.cfg
    ev = cfg.evaluator
    models.configure_threads(cfg.learner.threads)
    evaluation = _evaluation(cfg, ctx.run_dir.sub("videos") if ev.record_node else None)
    reader = shard_reader(
        ctx.run_dir,
        ctx.token,
        evaluation.assignment(),
        ctx.name,
        rpc.message_limit(cfg.net.max_message_mb),
        cfg.net.rpc_timeout,
        ctx.stop,
    )
    summaries = EvalSummaries(ctx.run_dir.sub("tensorboard") / "eval")
    best = BestKeeper(ctx.run_dir.sub("checkpoints"))
    schedule = Schedule(ev.eval_every, ev.eval_every_versions)
    previous = ctx.run_dir.last_evaluation()
    if previous and previous.get("versions"):
        # restarted: do not evaluate again what the previous process already did
        schedule.last_versions = tuple(previous["versions"])
    log.info(
        "evaluator ready",
        shards=cfg.paramserver.ps,
        env=cfg.run.env,
        episodes=ev.eval_episodes,
        greedy=ev.eval_greedy,
        record=ev.record_node,
        every_seconds=ev.eval_every,
        every_versions=ev.eval_every_versions,
    )
    evaluations = 0
    try:
        while not ctx.stop.is_set():
            try:
                snapshot = reader.read()
                now = time.monotonic()
                if not schedule.due(snapshot.versions, now):
                    _wait_until_due(ctx, reader, schedule)
                    continue
            except Stopped:
                break
            schedule.started(snapshot.versions, now)
            log.info(
                "evaluation started",
                version=snapshot.version,
                versions=snapshot.versions,
                episodes=ev.eval_episodes,
            )
            try:
                result = evaluation.run(
                    snapshot.weights,
                    snapshot.version,
                    snapshot.env_frames,
                    snapshot.versions,
                    stop=ctx.stop,
                )
            except EvaluationStopped:
                log.info("evaluation interrupted by the stop request", version=snapshot.version)
                break
            metrics.publish(result, ctx.run_dir)
            summaries.write(result)
            best.offer(result, snapshot.weights)
            evaluations += 1
    finally:
        summaries.close()
        reader.close()
        evaluation.close()
    return evaluations


def _evaluation(cfg, video_dir):
    """The Evaluation; without recording (and a warning) if the environment cannot render."""
    from ba3c import envs
    from services.evaluator.evaluation import Evaluation

    try:
        return Evaluation(cfg, video_dir)
    except envs.EnvError as e:
        if video_dir is None:
            raise
        log.warning("recording disabled: the environment cannot render frames", error=str(e))
        return Evaluation(cfg, None)


def _wait_until_due(ctx: service.ServiceContext, reader, schedule: Schedule) -> None:
    """Sleeps until the schedule may say yes. With eval_every_versions set it watches the
    versions meanwhile (Status calls: no parameters travel)."""
    while not ctx.stop.is_set():
        left = schedule.seconds_left(time.monotonic())
        if left <= 0 or schedule.every_versions <= 0:
            ctx.stop.wait(left if left > 0 else VERSION_POLL)
            return
        if ctx.stop.wait(min(VERSION_POLL, left)):
            return
        if schedule.due(reader.versions(), time.monotonic()):
            return
