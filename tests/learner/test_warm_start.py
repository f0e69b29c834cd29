"""Warm start: a new run's shards start from another run's parameters (real processes)."""

import numpy as np

from ba3c import checkpoint, rpc, tensors
from ba3c.v1 import paramserver_pb2 as ps_pb
from ba3c.v1 import paramserver_pb2_grpc as ps_grpc
from tests.learner.cluster import CARTPOLE
from tests.support import wait_for

# CartPole's mlp (4 observations, 2 actions, 64 hidden units), as `ba3c.models` names it
SHAPES = {
    "hidden1/kernel": (4, 64),
    "hidden1/bias": (64,),
    "hidden2/kernel": (64, 64),
    "hidden2/bias": (64,),
    "policy/kernel": (64, 2),
    "policy/bias": (2,),
    "value/kernel": (64, 1),
    "value/bias": (1,),
}


def other_run(folder, split_kernel: bool) -> dict[str, np.ndarray]:
    """Checkpoints of an 'earlier run' with 2 shards (hidden2/kernel cut in two pieces)."""
    rng = np.random.default_rng(5)
    values = {n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in SHAPES.items()}
    pieces = dict(values)
    if split_kernel:
        kernel = pieces.pop("hidden2/kernel")
        pieces["hidden2/kernel#0/2"], pieces["hidden2/kernel#1/2"] = kernel[:32], kernel[32:]
    names = sorted(pieces)
    for shard, part in enumerate((names[::2], names[1::2])):
        ckpt = checkpoint.Checkpoint(shard, 40 + shard, 1000, {n: pieces[n] for n in part})
        checkpoint.save(folder / "checkpoints" / f"paramserver-{shard}", ckpt)
    return values


def pulled(run_dir, shard: int) -> dict[str, np.ndarray]:
    address = run_dir.read_address("paramserver", shard)
    with rpc.make_channel(address, run_dir.read_secret()) as channel:
        stub = ps_grpc.ParameterServerStub(channel)
        reply = stub.Pull(ps_pb.PullRequest(client_id="test", have_version=-1), timeout=10)
    return tensors.decode_named(reply.parameters)


def test_a_new_run_starts_from_another_runs_parameters(tmp_path, run_dir_factory, processes):
    values = other_run(tmp_path / "earlier", split_kernel=True)
    run_dir = run_dir_factory(**CARTPOLE, init_from=str(tmp_path / "earlier"), ps=1)
    processes("paramserver", "paramserver", "--run-dir", str(run_dir.path))
    processes("learner", "learner", "--run-dir", str(run_dir.path))
    wait_for(lambda: run_dir.read_address("learner", 0), 120, "the learner to serve")
    got = pulled(run_dir, 0)
    assert set(got) == set(SHAPES)  # one shard here, two there: joined by piece names
    for name, value in values.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_parameters_that_do_not_fit_the_model_stop_the_learner_with_a_clear_message(
    tmp_path, run_dir_factory, processes
):
    other_run(tmp_path / "earlier", split_kernel=False)
    run_dir = run_dir_factory(
        **{**CARTPOLE, "mlp_hidden": 32}, init_from=str(tmp_path / "earlier"), ps=1
    )
    processes("paramserver", "paramserver", "--run-dir", str(run_dir.path))
    learner = processes("learner", "learner", "--run-dir", str(run_dir.path))
    wait_for(lambda: not learner.alive(), 120, "the learner to exit")
    assert learner.popen.returncode != 0
    assert "--init-from" in learner.output() and "do not fit this run's model" in learner.output()
