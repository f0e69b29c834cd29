"""A learner with its model spread over two shards, the fc kernel split in three pieces."""

from __future__ import annotations

import numpy as np
import pytest

from ba3c import tensors
from ba3c.v1 import learner_pb2 as pb
from ba3c.v1 import learner_pb2_grpc
from tests.learner.cluster import learner_channel, metric, shard_status
from tests.learner.test_act_contract import Pool
from tests.support import wait_for

N = 8


def frames():
    array = np.random.default_rng().integers(0, 256, (N, 84, 84, 4), dtype=np.uint8)
    return tensors.encode(array)


@pytest.mark.slow
def test_both_shards_train_and_hold_their_pieces(run_dir_factory, processes):
    run_dir = run_dir_factory(env="ALE/Breakout-v5", ps=2, fc_splits=3, batch_size=16)
    for k in range(2):
        processes(
            f"paramserver-{k}", "paramserver", "--run-dir", str(run_dir.path), "--index", str(k)
        )
    processes("learner", "learner", "--run-dir", str(run_dir.path))
    with learner_channel(run_dir) as channel:
        pool = Pool(learner_pb2_grpc.LearnerStub(channel))
        pool.step(
            pb.ActRequest(
                spec=pb.PoolSpec(
                    env_id="ALE/Breakout-v5",
                    num_envs=N,
                    observation_shape=[84, 84, 4],
                    observation_dtype=tensors.DType.Value("UINT8"),
                    num_actions=4,
                ),
                observations=frames(),
            )
        )
        for _ in range(30):
            reply = pool.step(
                pb.ActRequest(
                    observations=frames(), rewards=[0.0] * N, dones=[False] * N, env_frames=4 * N
                )
            )
            assert len(reply.actions) == N
        pool.close()
    statuses = wait_for(
        lambda: (
            (s := [shard_status(run_dir, k) for k in range(2)])
            and all(x.version >= 3 for x in s)
            and s
        ),
        120,
        "both shards to reach version 3",
    )
    # 12 variables, the fc kernel in 3 pieces: 14 pieces over the two shards
    assert sum(s.num_variables for s in statuses) == 14
    assert all(s.num_variables >= 1 for s in statuses)
    assert sum(s.num_parameters for s in statuses) == 1_686_693  # Nature CNN, 4 actions
    assert all(s.env_frames > 0 for s in statuses)
    wait_for(
        lambda: metric(run_dir, "ba3c_learner_train_steps_total") >= 3,
        30,
        "the learner to count its 3 training steps",
    )
