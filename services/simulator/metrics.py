"""The simulator's Prometheus metrics, declared once (Prometheus adds run/role/index)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ba3c.envs import Finished

ENV_FRAMES = Counter("ba3c_simulator_env_frames_total", "Emulator frames stepped by the pool.")
AGENT_STEPS = Counter(
    "ba3c_simulator_agent_steps_total", "Agent steps (one per environment per pool step)."
)
EPISODES = Counter("ba3c_simulator_episodes_total", "Games finished (all lives).")
EPISODE_RETURN = Histogram(
    "ba3c_simulator_episode_return",
    "Unclipped score of each finished game.",
    buckets=(
        -20,
        -10,
        -1,
        0,
        1,
        5,
        10,
        20,
        50,
        100,
        200,
        300,
        400,
        500,
        750,
        1000,
        2000,
        5000,
        10000,
        50000,
    ),
)
EPISODE_LENGTH = Histogram(
    "ba3c_simulator_episode_length_steps",
    "Agent steps of each finished game.",
    buckets=(10, 30, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10000, 27000, 100000),
)
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.5,
    1,
    2,
    5,
)
WAIT_SECONDS = Histogram(
    "ba3c_simulator_wait_seconds",
    "Seconds from sending a step's observations to having its actions.",
    buckets=_LATENCY_BUCKETS,
)
STEP_SECONDS = Histogram(
    "ba3c_simulator_step_seconds",
    "Seconds stepping the whole pool once.",
    buckets=_LATENCY_BUCKETS,
)
STREAM_RESTARTS = Counter(
    "ba3c_simulator_stream_restarts_total",
    "Act streams that ended and were reopened, by reason.",
    ["reason"],
)
CONNECTED = Gauge("ba3c_simulator_connected", "1 while an Act stream to a learner is open.")
POLICY_VERSION = Gauge(
    "ba3c_simulator_policy_version", "Parameter version of the latest actions received."
)


def record_step(
    wait_seconds: float,
    step_seconds: float,
    frames: int,
    num_envs: int,
    finished: list[Finished],
    version: int,
) -> None:
    WAIT_SECONDS.observe(wait_seconds)
    STEP_SECONDS.observe(step_seconds)
    ENV_FRAMES.inc(frames)
    AGENT_STEPS.inc(num_envs)
    POLICY_VERSION.set(version)
    for episode in finished:
        EPISODES.inc()
        EPISODE_RETURN.observe(episode.episode_return)
        EPISODE_LENGTH.observe(episode.length)
