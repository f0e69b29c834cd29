"""The checkpoint format (ba3c/checkpoint.py): round trip, damage detection, merging a run."""

from __future__ import annotations

import numpy as np
import pytest

from ba3c import checkpoint
from ba3c.checkpoint import Checkpoint, CheckpointError
from ba3c.rundir import RunDir
from ba3c.sharding import Assignment


def make(version: int, shard: int = 0, values=None) -> Checkpoint:
    rng = np.random.default_rng(version)
    params = values or {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
    }
    return Checkpoint(
        shard=shard,
        version=version,
        env_frames=10 * version,
        parameters=params,
        optimizer="adam",
        optimizer_step=version,
        slots={
            "m": {n: a * 2 for n, a in params.items()},
            "v": {n: a * 3 for n, a in params.items()},
        },
        extra={"lr_position": version},
    )


def test_a_checkpoint_reads_back_exactly(tmp_path):
    original = make(7)
    path = checkpoint.save(tmp_path, original)
    assert path.name == "ckpt-000000000007.ckpt"
    back = checkpoint.read(path)
    assert (back.shard, back.version, back.env_frames, back.optimizer, back.optimizer_step) == (
        0,
        7,
        70,
        "adam",
        7,
    )
    assert back.extra == {"lr_position": 7}
    for name, array in original.parameters.items():
        np.testing.assert_array_equal(back.parameters[name], array)
        np.testing.assert_array_equal(back.slots["m"][name], array * 2)
        np.testing.assert_array_equal(back.slots["v"][name], array * 3)
    back.parameters["a"] += 1  # restored arrays are writable
    assert not list(tmp_path.glob("*.tmp"))


def test_only_the_newest_are_kept(tmp_path):
    for version in (5, 10, 15, 20):
        checkpoint.save(tmp_path, make(version), keep=2)
    assert [p.name for p in checkpoint.list_files(tmp_path)] == [
        "ckpt-000000000020.ckpt",
        "ckpt-000000000015.ckpt",
    ]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_file_is_refused_and_the_one_before_is_used(tmp_path, damage):
    checkpoint.save(tmp_path, make(5))
    newest = checkpoint.save(tmp_path, make(10))
    data = newest.read_bytes()
    damaged = {
        "truncate": data[: len(data) // 2],
        "empty": b"",
        "flip": data[:100] + bytes([data[100] ^ 1]) + data[101:],
    }[damage]
    newest.write_bytes(damaged)
    with pytest.raises(CheckpointError, match="checksum|too short"):
        checkpoint.read(newest)
    reported = []
    found = checkpoint.newest(tmp_path, on_corrupt=lambda p, e: reported.append(p), quarantine=True)
    assert found is not None and found.version == 5
    assert reported == [newest]
    assert (tmp_path / "ckpt-000000000010.ckpt.corrupt").exists()
    assert [p.name for p in checkpoint.list_files(tmp_path)] == ["ckpt-000000000005.ckpt"]


def test_load_run_parameters_merges_the_newest_good_checkpoint_of_every_shard(tmp_path):
    variables = [("conv", (4, 3)), ("fc", (10, 2)), ("head", (2,))]
    assignment = Assignment(variables, num_shards=2, splits={"fc": 2})
    rng = np.random.default_rng(0)
    whole = {n: rng.standard_normal(s).astype(np.float32) for n, s in variables}
    run_dir = RunDir(tmp_path / "run").ensure()
    for k, pieces in enumerate(assignment.split(whole)):
        checkpoint.save(run_dir.checkpoints(k), make(90 + k, k, dict(pieces)))
        # an older checkpoint with other values, and a newer damaged one
        checkpoint.save(run_dir.checkpoints(k), make(50, k, {n: a + 1 for n, a in pieces.items()}))
        (run_dir.checkpoints(k) / checkpoint.file_name(200)).write_bytes(b"garbage")
    for where in (run_dir.path, run_dir.path / "checkpoints"):
        pieces, version, frames = checkpoint.load_run_parameters(where)
        assert (version, frames) == (90, 910)
        joined = assignment.join(pieces)
        for name, array in whole.items():
            np.testing.assert_array_equal(joined[name], array)
    one, version, _ = checkpoint.load_run_parameters(run_dir.checkpoints(1))
    assert version == 91 and set(one) == {p.name for p in assignment.shard_pieces(1)}
    # reading never renames anything: the damaged files are still there
    assert (run_dir.checkpoints(0) / checkpoint.file_name(200)).exists()


def test_load_run_parameters_says_what_is_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints under"):
        checkpoint.load_run_parameters(tmp_path)
    (tmp_path / "checkpoints" / "paramserver-0").mkdir(parents=True)
    (tmp_path / "checkpoints" / "paramserver-0" / checkpoint.file_name(3)).write_bytes(b"x")
    with pytest.raises(CheckpointError, match="shard 0: no readable checkpoint"):
        checkpoint.load_run_parameters(tmp_path)
