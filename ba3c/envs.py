"""Environments: what the simulator steps and the evaluator plays, preprocessed identically.

Two kinds of environment ids are accepted:

- Atari, as any gymnasium id that ale-py registers ("ALE/Breakout-v5",
  "BreakoutNoFrameskip-v4", ...). The id only names the ROM and the default of sticky
  actions; the preprocessing is always OURS, from `cfg.env`: up to `noop_max` no-ops at
  the start of each game, `frame_skip` with max-pooling over the last two frames,
  `frame_size` x `frame_size` grayscale (or RGB) frames, `frame_stack` frames stacked on
  the LAST axis, so an observation is uint8 [84, 84, 4] ([84, 84, 12] with `rgb`).
  No fire-on-reset (the agent learns to press FIRE). Sticky actions: an id's own
  `repeat_action_probability` (0.25 for ALE/*-v5 and *-v0 ids, 0 for *-v4 ids) unless
  `cfg.env.sticky_actions` >= 0 overrides it.
- Anything else registered in gymnasium with a 1-D Box observation and a Discrete
  action space ("CartPole-v1"): observations are float32 [obs_dim]; `frame_skip`,
  `frame_stack`, `episodic_life` do not apply; the id's own step limit is kept if it is
  shorter than `max_episode_steps`.

`make_pool` builds an `EnvPool` of N environments stepped together (ale-py's C++ vector
env for Atari, gymnasium's SyncVectorEnv otherwise); with `newest_frame` an Atari pool
hands out only the newest frame [N, 84, 84, 1] and whoever reads it stacks (the learner,
PoolSpec.frame_stack). Environments reset themselves: when
`Step.dones[i]` is set, `Step.observations[i]` is already the first observation of the
next episode (or, with `episodic_life`, the next life). Rewards are clipped for training
if `clip_rewards`; the score reported in `Finished` is the unclipped sum over the whole
game, all lives.

`make_eval_env` builds one `EvalEnv` for the evaluator through gymnasium's wrappers; it
produces the same observations as a pool (checked by tests/simulator/test_envs.py) but
plays whole games with unclipped rewards, and can hand out full-resolution RGB frames.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import ale_py
import cv2
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

from ba3c.config import Config
from ba3c.machine import available_cores

gym.register_envs(ale_py)

LIST_HINT = "run `ba3c simulator --list-envs` to see valid ids"
ATARI_ENTRY_POINT = "ale_py.env:AtariEnv"


class EnvError(ValueError):
    """An environment that cannot be built; str(e) says why and how to list valid ids."""


@dataclass(frozen=True)
class EnvSpec:
    """What a pool produces for one environment (without the leading batch axis)."""

    env_id: str
    observation_shape: tuple[int, ...]
    observation_dtype: np.dtype
    num_actions: int
    is_atari: bool


@dataclass
class Finished:
    """One game that ended: unclipped score over all lives, agent steps, emulator frames."""

    env_index: int
    episode_return: float
    length: int
    frames: int


@dataclass
class Step:
    """The result of stepping a whole pool once (see the module docstring)."""

    observations: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    finished: list[Finished] = field(default_factory=list)
    frames: int = 0


# ---------------------------------------------------------------------------------------
# Resolving an id


@dataclass(frozen=True)
class _Atari:
    game: str  # ROM name, e.g. "breakout"
    sticky: float  # repeat_action_probability


def _registered(env_id: str) -> gym.envs.registration.EnvSpec:
    try:
        return gym.spec(env_id)
    except gym.error.Error as e:
        reason = " ".join(str(e).split())
        raise EnvError(f"unknown environment id {env_id!r} ({reason}); {LIST_HINT}") from None


def _atari(cfg: Config) -> _Atari | None:
    """The ROM and sticky-action probability if cfg.run.env is Atari, else None."""
    spec = _registered(cfg.run.env)
    if spec.entry_point != ATARI_ENTRY_POINT:
        return None
    kwargs = spec.kwargs
    if kwargs.get("obs_type", "rgb") != "rgb":
        raise EnvError(
            f"{cfg.run.env!r} has {kwargs['obs_type']} observations; ba3c preprocesses "
            f"screen images, use the plain id; {LIST_HINT}"
        )
    sticky = cfg.env.sticky_actions
    if sticky < 0:
        sticky = float(kwargs.get("repeat_action_probability", 0.25))
    elif sticky > 1:
        raise EnvError(f"--sticky_actions must be -1 or in [0, 1], got {sticky}")
    return _Atari(game=kwargs["game"], sticky=sticky)


def _check_atari_config(cfg: Config) -> None:
    e = cfg.env
    for name, value, low in (
        ("frame_skip", e.frame_skip, 1),
        ("frame_stack", e.frame_stack, 1),
        ("frame_size", e.frame_size, 8),
        ("noop_max", e.noop_max, 0),
        ("max_episode_steps", e.max_episode_steps, 1),
    ):
        if value < low:
            raise EnvError(f"--{name} must be at least {low}, got {value}")


def _atari_observation_shape(cfg: Config) -> tuple[int, ...]:
    channels = cfg.env.frame_stack * (3 if cfg.env.rgb else 1)
    return (cfg.env.frame_size, cfg.env.frame_size, channels)


@functools.lru_cache(maxsize=64)
def _atari_num_actions(game: str) -> int:
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(ale_py.roms.get_rom_path(game))
    return len(ale.getMinimalActionSet())


@functools.lru_cache(maxsize=64)
def _vector_spec(env_id: str) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of a non-Atari id, checked to be usable."""
    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        reason = " ".join(str(e).split())
        raise EnvError(f"cannot build {env_id!r} ({reason}); {LIST_HINT}") from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Discrete):
        raise EnvError(
            f"{env_id!r} has a {type(act_space).__name__} action space; ba3c needs discrete "
            f"actions; {LIST_HINT}"
        )
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise EnvError(
            f"{env_id!r} has observations {obs_space}; ba3c needs Atari screens or a 1-D Box; "
            f"{LIST_HINT}"
        )
    return tuple(int(d) for d in obs_space.shape), int(act_space.n)


def describe(cfg: Config) -> EnvSpec:
    """What a pool built from `cfg` produces, without building one. Raises EnvError."""
    atari = _atari(cfg)
    if atari is not None:
        _check_atari_config(cfg)
        return EnvSpec(
            env_id=cfg.run.env,
            observation_shape=_atari_observation_shape(cfg),
            observation_dtype=np.dtype(np.uint8),
            num_actions=_atari_num_actions(atari.game),
            is_atari=True,
        )
    shape, num_actions = _vector_spec(cfg.run.env)
    return EnvSpec(
        env_id=cfg.run.env,
        observation_shape=shape,
        observation_dtype=np.dtype(np.float32),
        num_actions=num_actions,
        is_atari=False,
    )


def valid_ids() -> dict[str, list[str]]:
    """{"atari": [...], "other": [...]}: registered ids a pool accepts (other: not checked
    for their spaces, which would mean building each)."""
    atari, other = [], []
    for env_id, spec in sorted(gym.registry.items()):
        if spec.entry_point == ATARI_ENTRY_POINT:
            if spec.kwargs.get("obs_type", "rgb") == "rgb":
                atari.append(env_id)
        else:
            other.append(env_id)
    return {"atari": atari, "other": other}


def default_threads(num_envs: int, configured: int = 0) -> int:
    """Emulator threads: the configured number, else one per core, at most one per env."""
    if configured > 0:
        return configured
    return max(1, min(num_envs, available_cores()))


# ---------------------------------------------------------------------------------------
# Pools


class EnvPool:
    """N environments stepped together. Subclasses implement `_reset` and `_step_raw`."""

    spec: EnvSpec
    num_envs: int
    # k >= 2: observations are the newest frame only, [N, H, W, C / k] of the spec's
    # [H, W, C]; whoever reads them stacks the last k (the learner, PoolSpec.frame_stack).
    frame_stack: int = 0

    def __init__(
        self,
        spec: EnvSpec,
        num_envs: int,
        clip_rewards: bool,
        episodic_life: bool,
        frames_per_step: int,
    ):
        self.spec = spec
        self.num_envs = num_envs
        self._clip = clip_rewards
        self._episodic_life = episodic_life
        self._frames_per_step = frames_per_step
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int64)
        self._lives = np.zeros(num_envs, np.int64)

    def reset(self) -> np.ndarray:
        """Starts a fresh episode in every environment; returns observations [N, ...]."""
        obs, lives = self._reset()
        self._returns[:] = 0
        self._lengths[:] = 0
        self._lives[:] = lives
        return obs

    def step(self, actions: np.ndarray) -> Step:
        """Applies one action per environment. Raises ValueError for bad actions."""
        actions = self._check_actions(actions)
        obs, raw_rewards, ended, lives = self._step_raw(actions)
        self._returns += raw_rewards
        self._lengths += 1
        dones = ended.copy()
        if self._episodic_life:
            dones |= lives < self._lives
        self._lives[:] = lives
        finished = []
        for i in np.flatnonzero(ended):
            length = int(self._lengths[i])
            finished.append(
                Finished(int(i), float(self._returns[i]), length, length * self._frames_per_step)
            )
            self._returns[i] = 0
            self._lengths[i] = 0
        rewards = raw_rewards.astype(np.float32)
        if self._clip:
            np.clip(rewards, -1.0, 1.0, out=rewards)
        return Step(
            observations=obs,
            rewards=rewards,
            dones=dones,
            finished=finished,
            frames=self.num_envs * self._frames_per_step,
        )

    def close(self) -> None:
        """Releases the emulators."""

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"actions: expected shape [{self.num_envs}], got {list(actions.shape)}"
            )
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions: expected integers, got {actions.dtype}")
        if actions.size and (actions.min() < 0 or actions.max() >= self.spec.num_actions):
            raise ValueError(
                f"actions: each must be in [0, {self.spec.num_actions}), got "
                f"{int(actions.min())}..{int(actions.max())}"
            )
        return actions.astype(np.int32, copy=False)

    def _reset(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _step_raw(self, actions: np.ndarray):
        """-> (observations, unclipped rewards float64 [N], game over or truncated [N],
        lives [N])."""
        raise NotImplementedError

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stack_last(frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """[N, stack, H, W] (or [N, stack, H, W, 3]) -> [N, H, W, stack(*3)], C-contiguous."""
    n, stack, h, w = frames.shape[:4]
    if frames.ndim == 5:  # RGB: channels ordered frame-major (f0 r, f0 g, f0 b, f1 r, ...)
        return np.ascontiguousarray(frames.transpose(0, 2, 3, 1, 4)).reshape(n, h, w, stack * 3)
    if stack == 1:
        return frames.reshape(n, h, w, 1)
    # cv2.merge interleaves planes far faster than numpy's generic transpose (~10x here);
    # each plane is a [N, H*W] view with a row stride, so nothing is copied twice.
    planes = frames.reshape(n, stack, h * w)
    if out is None:
        out = np.empty((n, h, w, stack), np.uint8)
    if stack <= 512:  # cv2's channel limit (CV_CN_MAX)
        cv2.merge([planes[:, k] for k in range(stack)], dst=out.reshape(n, h * w, stack))
    else:
        out[...] = frames.transpose(0, 2, 3, 1)
    return out


class AtariPool(EnvPool):
    """Atari through ale-py's vector env: C++ threads, preprocessing done in C++."""

    def __init__(
        self,
        cfg: Config,
        spec: EnvSpec,
        atari: _Atari,
        num_envs: int,
        seed: int,
        threads: int,
        newest_frame: bool = False,
    ):
        from ale_py.vector_env import AtariVectorEnv

        super().__init__(
            spec, num_envs, cfg.env.clip_rewards, cfg.env.episodic_life, cfg.env.frame_skip
        )
        if newest_frame and cfg.env.frame_stack >= 2:
            self.frame_stack = cfg.env.frame_stack
        self._seed: int | None = seed
        self._env = AtariVectorEnv(
            atari.game,
            num_envs,
            num_threads=threads,
            max_num_frames_per_episode=cfg.env.max_episode_steps * cfg.env.frame_skip,
            repeat_action_probability=atari.sticky,
            autoreset_mode="SameStep",
            img_height=cfg.env.frame_size,
            img_width=cfg.env.frame_size,
            grayscale=not cfg.env.rgb,
            stack_num=1 if self.frame_stack else cfg.env.frame_stack,
            frameskip=cfg.env.frame_skip,
            maxpool=True,
            noop_max=cfg.env.noop_max,
            # Lives and rewards are handled here, so that scores stay unclipped and a lost
            # life does not reset the game.
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=False,
        )

    def _reset(self):
        # Seeded once; later resets continue each emulator's random stream.
        obs, info = self._env.reset(seed=self._seed)
        self._seed = None
        return stack_last(obs), info["lives"]

    def _step_raw(self, actions):
        obs, rewards, terminated, truncated, info = self._env.step(actions)
        return (stack_last(obs), rewards.astype(np.float64), terminated | truncated, info["lives"])

    def close(self) -> None:
        self._env.close()


class GymPool(EnvPool):
    """Any gymnasium id with 1-D observations, via SyncVectorEnv (cheap envs, tests)."""

    def __init__(self, cfg: Config, spec: EnvSpec, num_envs: int, seed: int):
        super().__init__(spec, num_envs, cfg.env.clip_rewards, False, 1)
        self._seed: int | None = seed
        limit = _step_limit(spec.env_id, cfg.env.max_episode_steps)
        self._env = gym.vector.SyncVectorEnv(
            [functools.partial(gym.make, spec.env_id, max_episode_steps=limit)] * num_envs,
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )

    def _reset(self):
        obs, _ = self._env.reset(seed=self._seed)
        self._seed = None
        return obs.astype(np.float32, copy=False), np.zeros(self.num_envs, np.int64)

    def _step_raw(self, actions):
        obs, rewards, terminated, truncated, _ = self._env.step(actions)
        return (
            obs.astype(np.float32, copy=False),
            np.asarray(rewards, np.float64),
            terminated | truncated,
            np.zeros(self.num_envs, np.int64),
        )

    def close(self) -> None:
        self._env.close()


def _step_limit(env_id: str, configured: int) -> int:
    own = gym.spec(env_id).max_episode_steps
    return min(own, configured) if own else configured


def make_pool(cfg: Config, num_envs: int, seed: int, newest_frame: bool = False) -> EnvPool:
    """N environments of cfg.run.env; environment i is seeded with seed + i. EnvError if
    the id or the preprocessing settings cannot be used. With `newest_frame`, an Atari pool
    (frame_stack >= 2) hands out only the newest frame (see EnvPool.frame_stack); other
    pools ignore it."""
    if num_envs < 1:
        raise EnvError(f"a pool needs at least 1 environment, got {num_envs}")
    spec = describe(cfg)
    if spec.is_atari:
        atari = _atari(cfg)
        threads = default_threads(num_envs, cfg.simulator.sim_threads)
        return AtariPool(cfg, spec, atari, num_envs, seed, threads, newest_frame)
    return GymPool(cfg, spec, num_envs, seed)


# ---------------------------------------------------------------------------------------
# One environment for evaluation


class EvalEnv:
    """One environment playing whole games: unclipped rewards, no episodic life, the same
    observations as a pool (no batch axis). Deterministic for a given seed."""

    def __init__(self, env: gym.Env, spec: EnvSpec, seed: int, record: bool):
        self.spec = spec
        self._env = env
        self._first_seed: int | None = seed
        self._record = record

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Starts a game: with `seed` if given, else with make_eval_env's seed the first
        time and the continuing random stream after that."""
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        obs, _ = self._env.reset(seed=seed)
        return self._observation(obs)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        action = int(action)
        if not 0 <= action < self.spec.num_actions:
            raise ValueError(f"action must be in [0, {self.spec.num_actions}), got {action}")
        obs, reward, terminated, truncated, _ = self._env.step(action)
        return self._observation(obs), float(reward), bool(terminated or truncated)

    def frame(self) -> np.ndarray:
        """The current screen at full resolution, RGB uint8 [H, W, 3]."""
        if not self._record:
            raise RuntimeError("frames need make_eval_env(..., record=True)")
        if self.spec.is_atari:
            return self._env.unwrapped.ale.getScreenRGB()
        try:
            return np.asarray(self._env.render(), np.uint8)
        except gym.error.DependencyNotInstalled as e:
            raise EnvError(f"cannot render {self.spec.env_id!r}: {e}") from None

    def close(self) -> None:
        self._env.close()

    def _observation(self, obs) -> np.ndarray:
        if self.spec.is_atari:
            return stack_last(np.asarray(obs)[None])[0]
        return np.asarray(obs, np.float32)


def make_eval_env(cfg: Config, seed: int, record: bool = False) -> EvalEnv:
    """One environment for the evaluator, seeded with `seed` at its first reset (unless
    reset() is given another). Call reset() before step(). EnvError if the id is bad."""
    spec = describe(cfg)
    atari = _atari(cfg)
    if atari is not None:
        e = cfg.env
        env = gym.make(
            cfg.run.env,
            frameskip=1,
            repeat_action_probability=atari.sticky,
            full_action_space=False,
            max_num_frames_per_episode=e.max_episode_steps * e.frame_skip,
        )
        env = AtariPreprocessing(
            env,
            noop_max=e.noop_max,
            frame_skip=e.frame_skip,
            screen_size=e.frame_size,
            terminal_on_life_loss=False,
            grayscale_obs=not e.rgb,
        )
        env = FrameStackObservation(env, e.frame_stack, padding_type="zero")
    else:
        limit = _step_limit(cfg.run.env, cfg.env.max_episode_steps)
        env = gym.make(
            cfg.run.env, max_episode_steps=limit, render_mode="rgb_array" if record else None
        )
    return EvalEnv(env, spec, seed, record)
