"""The pool's hand-built ActRequest bytes parse to exactly the message protobuf would build."""

from __future__ import annotations

import numpy as np
import pytest

from ba3c import tensors
from ba3c.envs import Finished, Step
from ba3c.v1 import learner_pb2
from services.simulator import stream


def protobuf_built(step: Step) -> learner_pb2.ActRequest:
    return learner_pb2.ActRequest(
        pool_id="simulator-7",
        observations=tensors.encode(step.observations),
        rewards=step.rewards.tolist(),
        dones=step.dones.tolist(),
        env_frames=step.frames,
        finished_episodes=[
            learner_pb2.EpisodeStats(
                env_index=f.env_index,
                episode_return=f.episode_return,
                length=f.length,
                frames=f.frames,
            )
            for f in step.finished
        ],
    )


@pytest.mark.parametrize(
    "observations",
    [
        np.random.default_rng(0).integers(0, 256, (16, 84, 84, 4), dtype=np.uint8),
        np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32),
        np.zeros((1, 2), np.float32),
        # a non-contiguous view (a channel-first stack seen channel-last)
        np.random.default_rng(2)
        .integers(0, 256, (2, 4, 5, 5), dtype=np.uint8)
        .transpose(0, 2, 3, 1),
    ],
)
def test_hand_built_request_parses_to_the_protobuf_message(observations):
    n = observations.shape[0]
    step = Step(
        observations=observations,
        rewards=np.linspace(-1, 1, n).astype(np.float32),
        dones=np.arange(n) % 2 == 0,
        frames=4 * n,
        finished=[Finished(0, 123.5, 77, 308)],
    )
    wire = stream.next_request("simulator-7", step)
    parsed = learner_pb2.ActRequest.FromString(wire)
    assert parsed == protobuf_built(step)
    assert np.array_equal(tensors.decode(parsed.observations), observations)


def test_first_request_carries_the_spec_and_no_rewards():
    spec = learner_pb2.PoolSpec(
        env_id="CartPole-v1",
        num_envs=2,
        observation_shape=[4],
        observation_dtype=tensors.DType.Value("FLOAT32"),
        num_actions=2,
    )
    obs = np.ones((2, 4), np.float32)
    parsed = learner_pb2.ActRequest.FromString(stream.first_request("simulator-0", spec, obs))
    assert parsed.spec == spec and parsed.pool_id == "simulator-0"
    assert not parsed.rewards and not parsed.dones and not parsed.finished_episodes
    assert np.array_equal(tensors.decode(parsed.observations), obs)


@pytest.mark.parametrize(
    "actions, problem",
    [
        ([0, 1], "has 2 entries, expected 3"),
        ([0, 1, 4], r"must be in \[0, 4\), got 0..4"),
        ([-1, 0, 0], r"must be in \[0, 4\)"),
    ],
)
def test_responses_that_break_the_contract_are_protocol_errors(actions, problem):
    with pytest.raises(stream.ProtocolError, match=problem):
        stream.actions_from(learner_pb2.ActResponse(actions=actions), 3, 4)
    good = stream.actions_from(learner_pb2.ActResponse(actions=[3, 0, 2]), 3, 4)
    assert good.tolist() == [3, 0, 2]
