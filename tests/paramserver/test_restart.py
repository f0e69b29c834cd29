"""A shard killed with SIGKILL resumes from its newest good checkpoint: parameters,
optimizer state, version, frame counter and learning-rate schedule position."""

from __future__ import annotations

import numpy as np

from ba3c import checkpoint
from services.paramserver.optimizers import Hyper, Optimizer
from tests.paramserver.support import SHAPES, Client, gradients, initial_values, start_shard
from tests.support import wait_for


def test_sigkill_then_restart_resumes_from_the_newest_checkpoint_or_the_one_before(
    run_dir_factory, processes
):
    run_dir = run_dir_factory(save_every=5, keep_checkpoints=3)
    proc, _ = start_shard(processes, run_dir, name="shard-1")
    client = Client(run_dir)
    client.initialize(initial_values())
    version = 0
    for i in range(13):
        reply, _ = client.push(version, gradients(i), env_frames=4)
        version = reply.version
    folder = run_dir.checkpoints(0)
    wait_for(
        lambda: checkpoint.list_files(folder)[:1] == [folder / checkpoint.file_name(10)],
        20,
        "the checkpoint of version 10",
    )
    proc.kill()
    client.close()

    saved = checkpoint.read(folder / checkpoint.file_name(10))
    proc, _ = start_shard(processes, run_dir, name="shard-2")
    client = Client(run_dir)
    status = client.status()
    assert (status.version, status.env_frames, status.checkpoint_version) == (10, 40, 10)
    assert status.pushes_applied == 10
    again = client.initialize(initial_values(seed=3))
    assert not again.applied and "restored from checkpoint" in again.message
    _, params = client.pull()
    for name in SHAPES:
        np.testing.assert_array_equal(params[name], saved.parameters[name])
    proc.kill()
    client.close()

    newest = folder / checkpoint.file_name(10)
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    proc, _ = start_shard(processes, run_dir, name="shard-3")
    client = Client(run_dir)
    assert client.status().version == 5
    assert (folder / (newest.name + ".corrupt")).exists()
    log = run_dir.log_path("paramserver", 0).read_text()
    assert "skipping damaged checkpoint" in log and "checksum mismatch" in log
    client.close()


def test_a_resumed_shard_continues_exactly_as_if_it_had_never_stopped(run_dir_factory, processes):
    knobs = dict(
        optimizer="adam",
        lr=0.01,
        beta1=0.8,
        beta2=0.75,
        epsilon=1e-8,
        lr_schedule="linear",
        lr_final=0.001,
        lr_decay_steps=8,
    )
    run_dir = run_dir_factory(save_every=3, **knobs)
    proc, _ = start_shard(processes, run_dir, name="shard-1")
    client = Client(run_dir)
    client.initialize(initial_values())
    version = 0
    for i in range(6):
        version = client.push(version, gradients(i))[0].version
    wait_for(
        lambda: checkpoint.list_files(run_dir.checkpoints(0))[0].name == checkpoint.file_name(6),
        20,
        "the checkpoint of version 6",
    )
    proc.kill()
    client.close()

    start_shard(processes, run_dir, name="shard-2")
    client = Client(run_dir)
    for i in range(6, 12):
        reply, params = client.push(version, gradients(i))
        version = reply.version
    assert version == 12

    reference = {n: a.copy() for n, a in initial_values().items()}
    hyper = Hyper(**knobs)
    optimizer = Optimizer(hyper, {n: a.shape for n, a in reference.items()})
    for i in range(12):
        optimizer.apply(reference, gradients(i), hyper.learning_rate(i))
    for name in SHAPES:
        np.testing.assert_allclose(params[name], reference[name], rtol=1e-6)
    client.close()
