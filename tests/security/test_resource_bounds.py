"""Resource bounds under a flood: a real learner flooded with pools keeps its memory bounded,
refuses streams beyond its cap at once, slows pools down with its bounded queue, and goes
on serving and training when the flood is over."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import numpy as np
import pytest

from ba3c import rpc, tensors
from ba3c.v1 import learner_pb2 as pb
from ba3c.v1 import learner_pb2_grpc
from tests.faults.cluster import Cluster
from tests.support import wait_for

POOLS = 150  # streams opened at once, far more than a learner serves
ENVS = 32
FLOOD_SECONDS = 20.0
QUEUE = 512


def spec() -> pb.PoolSpec:
    return pb.PoolSpec(
        env_id="CartPole-v1",
        num_envs=ENVS,
        observation_shape=[4],
        observation_dtype=tensors.dtype_from_name("float32"),
        num_actions=2,
    )


class FloodPool(threading.Thread):
    """One pool that keeps the contract (one request, then its answer) as fast as the
    learner answers, until `stop`."""

    def __init__(self, stub, index: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.stub, self.index, self.stop = stub, index, stop
        self.steps, self.code = 0, None
        rng = np.random.default_rng(abs(index))
        self.obs = tensors.encode(rng.standard_normal((ENVS, 4)).astype(np.float32))

    def step(self, t: int) -> pb.ActRequest:
        if t == 0:
            return pb.ActRequest(pool_id=f"flood-{self.index}", spec=spec(), observations=self.obs)
        # every env ends an episode every few steps, so transitions pile up fast
        dones = [(t + i) % 3 == 0 for i in range(ENVS)]
        return pb.ActRequest(
            observations=self.obs, rewards=[1.0] * ENVS, dones=dones, env_frames=ENVS
        )

    def run(self):
        requests: queue.Queue = queue.Queue()
        requests.put(self.step(0))
        replies = self.stub.Act(iter(requests.get, None), timeout=FLOOD_SECONDS + 120)
        try:
            for _ in replies:
                self.steps += 1
                requests.put(None if self.stop.is_set() else self.step(self.steps))
        except grpc.RpcError as e:
            self.code = e.code()
        else:
            self.code = grpc.StatusCode.OK


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("flood"), queue_size=QUEUE, batch_size=64)
    cluster.start_all(shards=1, learners=1, pools=0, evaluator=False)
    try:
        cluster.wait_progress(None, 180, "the shard to be initialized")
        address = wait_for(
            lambda: cluster.run_dir.read_address("learner", 0), 180, "the learner's address"
        )
        channel = rpc.make_channel(address, cluster.run_dir.read_secret(), retry_services=())
        rpc.wait_until_serving(channel, 180)
        yield cluster, channel
        channel.close()
    finally:
        cluster.stop_all()


def test_a_flood_of_pools_is_capped_and_memory_stays_bounded(learner):
    cluster, channel = learner
    stub = learner_pb2_grpc.LearnerStub(channel)
    stop = threading.Event()
    # warm up with a few pools, then take the baseline
    warm = [FloodPool(stub, -k - 1, stop) for k in range(4)]
    for p in warm:
        p.start()
    wait_for(lambda: all(p.steps > 20 for p in warm), 120, "the warm-up pools to step")
    baseline = cluster.rss_mb("learner-0")
    version_before = cluster.progress().version

    flood = [FloodPool(stub, k, stop) for k in range(POOLS)]
    samples, depth = [], []
    started = time.monotonic()
    for p in flood:
        p.start()
    while time.monotonic() - started < FLOOD_SECONDS:
        samples.append(cluster.rss_mb("learner-0"))
        values = cluster.metrics("learner-0")
        depth.append(values.value("ba3c_learner_queue_depth"))
        connected = values.value("ba3c_learner_pools_connected")
        time.sleep(0.5)  # the sampling period of the memory curve
    stop.set()
    for p in warm + flood:
        p.join(60)

    refused = [p for p in flood if p.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    served = [p for p in flood if p.steps > 0]
    peak = max(samples)
    third = max(1, len(samples) // 3)
    print(
        f"flood: {POOLS} pools x {ENVS} envs for {FLOOD_SECONDS:.0f} s; served "
        f"{len(served)}, refused {len(refused)}; learner RSS baseline {baseline:.0f} MiB, "
        f"peak {peak:.0f} MiB, first third max {max(samples[:third]):.0f}, last third max "
        f"{max(samples[-third:]):.0f}; queue depth max {max(depth):.0f} of {QUEUE}; "
        f"pools connected at the end {connected:.0f}"
    )
    assert refused, "no stream was refused: the learner has no cap on concurrent streams"
    assert all(
        p.code
        in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED)
        for p in flood
    ), {p.code for p in flood}
    assert len(served) + 4 <= 64
    assert max(depth) <= QUEUE
    assert peak < baseline + 400, f"RSS grew from {baseline:.0f} to {peak:.0f} MiB"
    assert max(samples[-third:]) < max(samples[:third]) + 150, "memory kept growing"

    # the flood is over: the learner is healthy, lets every stream go and trains on
    assert rpc.health_check(channel, timeout=10)
    wait_for(
        lambda: cluster.metrics("learner-0").value("ba3c_learner_pools_connected") == 0,
        60,
        "every flood stream to be let go",
    )
    assert cluster.progress().version > version_before, "no training during the flood"
