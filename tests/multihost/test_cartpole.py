"""CartPole across four hosts under real Slurm: one hetjob, shared by the tests of this module
in order (placement, Prometheus, a pool host cut off, 195, the learner host cut off, the
ordered stop), so that the whole story costs one job start."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ba3c import checkpoint
from ba3c.tools import monitor
from services.learner import metrics as learner_metrics
from services.simulator import metrics as simulator_metrics
from tests.monitoring.prom import PrometheusAPI
from tests.multihost.cluster import STATE
from tests.multihost.job import (
    H2,
    H3,
    RunningJob,
    exposed,
    host_of,
    listening_addresses,
    start_job,
)
from tests.slurm.cluster import wait_for_job_end
from tests.support import wait_for

pytestmark = pytest.mark.slow  # one shared job: over a minute for the module

RPC_TIMEOUT = 3.0
CARTPOLE = [
    *("-e", "CartPole-v1", "--model", "mlp", "--lr", "0.001", "--beta1", "0.9"),
    *("--beta2", "0.999", "--batch_size", "64", "--simulator_procs", "8"),
    *("--optimizer", "adam", "--epsilon", "1e-8", "--grad_clip", "40"),
    *("--eval_every", "5", "--eval_episodes", "10", "--no-record_node", "--save_every", "0"),
    *("--rpc_timeout", str(RPC_TIMEOUT)),
]
SERVICES = [
    ("paramserver", 0),
    ("paramserver", 1),
    ("learner", 0),
    ("simulator", 0),
    ("simulator", 1),
    ("evaluator", 0),
]
STREAMS = exposed(learner_metrics.POOLS)
TRAIN_STEPS = exposed(learner_metrics.TRAIN_STEPS)
FAILURES = exposed(learner_metrics.PUSHPULL_FAILURES)
LEARNER_FRAMES = exposed(learner_metrics.ENV_FRAMES)
POOL_STEPS = exposed(simulator_metrics.AGENT_STEPS)
POOL_CONNECTED = exposed(simulator_metrics.CONNECTED)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cartpole-hosts")
    (path / "run" / "targets").mkdir(parents=True)  # Prometheus watches it from the start
    return path


@pytest.fixture(scope="module")
def prometheus(folder) -> Iterator[PrometheusAPI]:
    """A real Prometheus in the root namespace, scraping the run's targets every second."""
    config = monitor.config_for_runs([folder / "run"], scrape_interval="1s")
    server = monitor.LocalPrometheus(config, folder / "prometheus")
    server.start()
    (STATE / "prometheus.pid").write_text(str(server.pid))
    try:
        server.wait_ready(timeout=30)
        yield PrometheusAPI(server.url)
    finally:
        server.stop()
        (STATE / "prometheus.pid").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def cartpole(hosts, folder, prometheus) -> Iterator[RunningJob]:
    job = start_job(hosts, folder, CARTPOLE, env={"BA3C_USE_SYNC": "false"})
    try:
        wait_for(
            lambda: job.metric("learner", TRAIN_STEPS) > 0,
            120,
            "the learner on ba3c-h2 to train",
            interval=0.5,
        )
        yield job
    finally:
        for h in hosts.hosts:
            hosts.link(h, up=True)
        job.cancel()
        print(f"----- job output -----\n{job.output[-5000:]}")


def pool_steps(job: RunningJob, index: int) -> float:
    return job.metric("simulator", POOL_STEPS, index)


def test_each_service_binds_and_advertises_its_own_hosts_address(hosts, cartpole):
    for role, index in SERVICES:
        host = host_of(role, index)
        published = [cartpole.metrics_address(role, index)]
        if role in ("paramserver", "learner"):
            published.append(cartpole.run_dir.read_address(role, index))
        for address in published:
            name, port = address.rsplit(":", 1)
            assert socket.gethostbyname(name) == host.address, (role, index, address)
            # bound to the host's own address, not to every address or loopback
            assert f"{host.address}:{port}" in listening_addresses(hosts, host), (role, address)


def test_prometheus_on_the_host_scrapes_every_target_in_every_namespace(cartpole, prometheus):
    def all_up():
        up = prometheus.values('up{job!="prometheus"}')
        found = {
            (dict(k)["role"], int(dict(k)["index"])): (dict(k)["instance"], v)
            for k, v in up.items()
        }
        return set(found) == set(SERVICES) and all(v == 1 for _, v in found.values()) and found

    found = wait_for(all_up, 60, "up == 1 for all six services in Prometheus", interval=1)
    for (role, index), (instance, _) in found.items():
        assert socket.gethostbyname(instance.rsplit(":", 1)[0]) == host_of(role, index).address


def test_training_goes_on_while_a_pool_host_is_cut_off_and_the_pool_reconnects(hosts, cartpole):
    wait_for(lambda: cartpole.metric("learner", STREAMS) == 2, 60, "both pools streaming")
    hosts.link(H3, up=False)
    try:
        trained, other_pool = (
            cartpole.metric("learner", TRAIN_STEPS),
            pool_steps(cartpole, 1),
        )
        # gRPC keepalive (20 s + 10 s) notices the silent peer and drops the stream
        wait_for(
            lambda: cartpole.metric("learner", STREAMS) == 1,
            60,
            "the learner to drop the stream of the pool on the cut-off host",
            interval=0.5,
        )
        assert cartpole.metric("learner", TRAIN_STEPS) > trained
        assert pool_steps(cartpole, 1) > other_pool, "the pool on ba3c-h4 stopped too"
    finally:
        hosts.link(H3, up=True)
    wait_for(
        lambda: cartpole.metric("learner", STREAMS) == 2,
        60,
        "the pool on ba3c-h3 to open a new stream (the learner dropped the old one)",
        interval=0.5,
    )
    back = pool_steps(cartpole, 0)
    wait_for(lambda: pool_steps(cartpole, 0) > back, 30, "the pool on ba3c-h3 to step again")


def test_cartpole_reaches_195_across_hosts(cartpole):
    best = wait_for(
        lambda: (m := max((e["mean"] for e in cartpole.evaluations()), default=0)) >= 195 and m,
        240,
        "an evaluation (on ba3c-h4) with a mean score of 195",
        interval=1,
    )
    assert best >= 195


def test_learner_host_cut_off_past_rpc_timeout_recovers(hosts, cartpole):
    wait_for(lambda: cartpole.metric("learner", STREAMS) == 2, 60, "both pools streaming")
    hosts.link(H2, up=False)
    cut = time.monotonic()
    try:
        # Down until both pools (on the other hosts) have given the learner up: far longer
        # than rpc_timeout. The learner itself only pushes what it had queued before.
        wait_for(
            lambda: not any(cartpole.metric("simulator", POOL_CONNECTED, k) for k in (0, 1)),
            60,
            "both pools to notice that the learner's host is gone",
            interval=0.5,
        )
        assert time.monotonic() - cut > RPC_TIMEOUT
        timed_out = cartpole.metric("learner", FAILURES, inside=True, code="DEADLINE_EXCEEDED")
    finally:
        hosts.link(H2, up=True)
    versions = [cartpole.shard(k).version for k in (0, 1)]
    wait_for(
        lambda: (
            cartpole.metric("learner", STREAMS) == 2
            and all(cartpole.shard(k).version > versions[k] + 10 for k in (0, 1))
        ),
        60,
        "the pools back on the learner and both shards taking its pushes again",
        interval=0.5,
    )
    repeated = [cartpole.shard(k).pushes_repeated for k in (0, 1)]
    print(
        f"PushPulls that hit the {RPC_TIMEOUT}s deadline while cut off: {timed_out:g}; "
        f"retries answered from the shards' stored outcomes: {repeated}"
    )
    # No push applied twice: each applied push is one train step of the (only) learner, and
    # at most one push per shard is in flight (applied, not counted yet by the learner). A
    # retried push carries its first attempt's idempotency key (issue 14 section 3).
    for k in (0, 1):
        shard = cartpole.shard(k)  # first the shard, then the learner: its counters only grow
        trained = cartpole.metric("learner", TRAIN_STEPS)
        frames = cartpole.metric("learner", LEARNER_FRAMES)
        assert shard.pushes_applied <= trained + 1, (k, shard, trained)
        assert shard.env_frames <= frames, (k, shard, frames)


def test_the_job_stops_in_order_exits_0_and_the_shards_checkpoint(hosts, cartpole):
    # USR1 to the batch script is what Slurm sends near the time limit: an ordered stop.
    hosts.run("scancel", "--batch", "--signal=USR1", cartpole.job.job_id)
    state = wait_for_job_end(hosts, cartpole.job.job_id, 120)
    assert state == "COMPLETED", cartpole.output[-4000:]
    assert "stopping (USR1" in cartpole.output
    for k in (0, 1):
        files = checkpoint.list_files(cartpole.run_dir.checkpoints(k))
        assert files and checkpoint.read(files[0]).version > 0, f"shard {k}"
