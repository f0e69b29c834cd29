"""The trainer: batches of transitions -> A3C gradients -> PushPull to every shard ->
fresh parameters loaded into the model the predictor uses.

Two threads form a pipeline: the trainer computes the gradients of batch n+1 while the
pusher still exchanges batch n with the shards (one batch in flight at most, so a
gradient is at most one local update staler than without the pipeline). On a CPU this
nearly hides the PushPull round trip behind the gradient computation.

Also reports what training looks like: loss parts, entropy, gradient norms, advantage as
Prometheus gauges, and the online score and losses as TensorBoard scalars under
RUN_DIR/tensorboard/learner-I/ (score by env frames, losses by version).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import structlog
import tensorflow as tf

from ba3c import models
from ba3c.paramserver_client import ParamServerClient, Stopped
from services.learner import metrics
from services.learner.a3c import StepResult
from services.learner.memory import Transition, policy_lag
from services.learner.progress import Progress

log = structlog.get_logger()

SUMMARY_EVERY = 2.0  # seconds between TensorBoard/log summaries


def take_batch(
    transitions: queue.Queue[Transition], size: int, stop: threading.Event
) -> list[Transition] | None:
    """`size` transitions from the queue (blocking); None if stopped first."""
    batch: list[Transition] = []
    while len(batch) < size:
        try:
            batch.append(transitions.get(timeout=0.2))
        except queue.Empty:
            if stop.is_set():
                return None
    metrics.QUEUE_DEPTH.set(transitions.qsize())
    return batch


def record_policy_lag(stats: dict[str, float], versions: np.ndarray, seconds: np.ndarray) -> None:
    """Into the Prometheus histograms, and the batch means into `stats` (TensorBoard)."""
    for v, s in zip(versions.tolist(), seconds.tolist(), strict=True):
        metrics.POLICY_LAG_VERSIONS.observe(v)
        metrics.POLICY_LAG_SECONDS.observe(s)
    stats["policy_lag_versions"] = float(versions.mean())
    stats["policy_lag_seconds"] = float(seconds.mean())


def stack(batch: list[Transition]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    observations = np.stack([t.observation for t in batch])
    actions = np.fromiter((t.action for t in batch), np.int32, len(batch))
    returns = np.fromiter((t.ret for t in batch), np.float32, len(batch))
    return observations, actions, returns


class Trainer:
    def __init__(
        self,
        model: models.PolicyValueModel,
        train_step,
        shards: ParamServerClient,
        transitions: queue.Queue[Transition],
        progress: Progress,
        batch_size: int,
        tensorboard_dir: Path,
        stop: threading.Event,
    ):
        self.model = model
        self.train_step = train_step
        self.shards = shards
        self.transitions = transitions
        self.progress = progress
        self.batch_size = batch_size
        self.stop = stop
        self.writer = tf.summary.create_file_writer(str(tensorboard_dir), flush_millis=5_000)
        self.steps = 0
        self.error: BaseException | None = None
        self._last_summary = 0.0
        self._in_flight: queue.Queue[tuple[StepResult, int] | None] = queue.Queue(maxsize=1)
        self._threads = [
            threading.Thread(target=self._guard, args=(f,), name=n, daemon=True)
            for f, n in ((self._compute, "trainer"), (self._push, "pusher"))
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.writer.close()

    def _guard(self, loop) -> None:
        try:
            loop()
        except Stopped:
            pass
        except BaseException as e:
            self.error = e
            log.exception("trainer failed")
            self.stop.set()

    def _compute(self) -> None:
        while not self.stop.is_set():
            batch = take_batch(self.transitions, self.batch_size, self.stop)
            if batch is None:
                break
            lag = policy_lag(batch, self.shards.version, time.monotonic())
            result = self.train_step(*stack(batch))
            record_policy_lag(result.stats, *lag)
            while not self.stop.is_set():
                try:
                    self._in_flight.put((result, len(batch)), timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _push(self) -> None:
        while not self.stop.is_set():
            try:
                item = self._in_flight.get(timeout=0.2)
            except queue.Empty:
                continue
            result, samples = item
            parameters = self.shards.push_pull(result.gradients, self.progress.env_frames, samples)
            metrics.VERSION.set(self.shards.version)
            models.set_weights(self.model, parameters)
            self.steps += 1
            self._report(result, samples)

    def _report(self, result: StepResult, samples: int) -> None:
        s = result.stats
        metrics.TRAIN_STEPS.inc()
        metrics.SAMPLES_TRAINED.inc(samples)
        for part in ("total", "policy", "value"):
            metrics.LOSS.labels(part).set(s[part])
        metrics.ENTROPY.set(s["entropy"])
        metrics.GRAD_NORM.labels("before_clip").set(s["grad_norm"])
        metrics.GRAD_NORM.labels("after_clip").set(s["grad_norm_clipped"])
        metrics.ADVANTAGE.set(s["advantage_mean"])
        now = time.monotonic()
        if now - self._last_summary < SUMMARY_EVERY:
            return
        self._last_summary = now
        version = self.shards.version
        score = self.progress.return_mean()
        with self.writer.as_default():
            for name, value in s.items():
                tf.summary.scalar(f"train/{name}", value, step=version)
            if score is not None:
                tf.summary.scalar("online/return_mean", score, step=self.progress.env_frames)
        log.info(
            "training",
            version=version,
            train_steps=self.steps,
            agent_steps=self.progress.agent_steps,
            env_frames=self.progress.env_frames,
            episodes=self.progress.episodes,
            online_return_mean=score,
            loss=round(s["total"], 4),
            entropy=round(s["entropy"], 4),
            grad_norm=round(s["grad_norm"], 3),
            queue=self.transitions.qsize(),
        )
