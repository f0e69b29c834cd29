"""One evaluation: load parameters into the model, play the episodes, record the first.

`Evaluation` holds what lives across evaluations (the environment, the model, where videos
go) and is shared by the service (parameters pulled from the shards) and by `ba3c
evaluate` (parameters from a checkpoint), so both play exactly the same games.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ba3c import envs, models
from ba3c.config import Config
from services.evaluator import videos
from services.evaluator.play import play_episodes
from services.evaluator.stats import EvalResult

SIDE_BY_SIDE = 16  # most episodes played at once (one environment each); more wait their turn
ATARI_FPS = 60.0  # the emulator's frame rate; a video shows one frame per agent step
OTHER_FPS = 30.0


class Stopped(Exception):
    """The stop event was set in the middle of an evaluation: nothing is reported."""


class Evaluation:
    def __init__(self, cfg: Config, video_dir: Path | None = None):
        """`video_dir`: record the first episode of each evaluation there (None: never).

        Raises envs.EnvError if the environment cannot be built, or cannot render frames
        while `video_dir` asks for them."""
        self.cfg = cfg
        self.video_dir = video_dir
        self.spec = envs.describe(cfg)
        self.model = models.build_model(
            cfg, self.spec.observation_shape, self.spec.num_actions, self.spec.observation_dtype
        )
        # episodes are played side by side, up to SIDE_BY_SIDE at once, one environment
        # each; only the first one records
        self.envs = [
            envs.make_eval_env(cfg, cfg.run.seed, record=i == 0 and video_dir is not None)
            for i in range(min(cfg.evaluator.eval_episodes, SIDE_BY_SIDE))
        ]
        if video_dir is not None:
            # fail now (EnvError) rather than in the middle of an evaluation
            self.envs[0].reset(seed=0)
            self.envs[0].frame()
        self.fps = ATARI_FPS / cfg.env.frame_skip if self.spec.is_atari else OTHER_FPS
        self._stop: threading.Event | None = None
        self._stop_seen: float | None = None
        self._greedy = cfg.evaluator.eval_greedy  # the policy being played now

    def assignment(self):
        """The shard layout of this model (the same one the learners use)."""
        return models.assignment(self.cfg, self.model)

    def run(
        self,
        weights: Mapping[str, np.ndarray],
        version: int,
        env_frames: int,
        versions: tuple[int, ...] = (),
        stop: threading.Event | None = None,
    ) -> EvalResult:
        """Plays cfg.evaluator.eval_episodes episodes with `weights`. Once `stop` is set the
        evaluation may go on for eval_stop_grace seconds, then raises Stopped (a Breakout
        evaluation can last minutes: the evaluator must stop within its grace)."""
        ev = self.cfg.evaluator
        self._stop, self._stop_seen = stop, None
        self._greedy = ev.eval_greedy
        models.set_weights(self.model, weights)
        started = time.monotonic()
        recorder = None
        if self.video_dir is not None:
            recorder = videos.VideoRecorder(self.video_dir, self.fps)
        try:
            episodes = self._play(ev.eval_episodes, ev.eval_max_steps, recorder)
        except BaseException:
            if recorder is not None:
                recorder.discard()
            raise
        video_name = None
        if recorder is not None:
            path = recorder.finish(videos.video_name(version, episodes[0].score))
            if path is not None:
                video_name = path.name
                videos.prune(self.video_dir, ev.keep_videos)
        other: tuple = ()
        if ev.eval_both:  # the other policy, same seeds, no video
            self._greedy = not ev.eval_greedy
            other = tuple(self._play(ev.eval_episodes, ev.eval_max_steps))
        return EvalResult(
            version=version,
            env_frames=env_frames,
            episodes=tuple(episodes),
            seconds=time.monotonic() - started,
            greedy=ev.eval_greedy,
            versions=tuple(versions),
            video=video_name,
            other=other,
        )

    def _play(self, count: int, max_steps: int, sink=None) -> list:
        """Episodes 0..count-1, side by side in groups of len(self.envs); the first one
        recorded into `sink`."""
        episodes = []
        for first in range(0, count, len(self.envs)):
            group = self.envs[: min(len(self.envs), count - first)]
            episodes += play_episodes(
                group,
                self._policy,
                self.cfg.run.seed,
                max_steps,
                sink if first == 0 else None,
                first=first,
            )
        return episodes

    def _policy(self, observations: np.ndarray, generators) -> list[int]:
        if self._stop is not None and self._stop.is_set():
            now = time.monotonic()
            self._stop_seen = self._stop_seen or now
            if now - self._stop_seen >= self.cfg.evaluator.eval_stop_grace:
                raise Stopped
        logits, _ = self.model.predict(observations)
        # row by row, each with its episode's own generator: an episode's samples do not
        # depend on which other episodes are still playing
        return [
            int(models.sample_actions(logits[j : j + 1], self._greedy, rng)[0])
            for j, rng in enumerate(generators)
        ]

    def close(self) -> None:
        for env in self.envs:
            env.close()
