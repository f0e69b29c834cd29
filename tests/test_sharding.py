"""The shard assignment: deterministic, balanced, and splits/joins exactly."""

import numpy as np
import pytest

from ba3c.sharding import Assignment, join_by_names
from tests.support.models import NATURE_CNN

NATURE = NATURE_CNN


def test_same_inputs_give_the_same_assignment():
    a = Assignment(NATURE, 4, {"fc/kernel": 4})
    b = Assignment(list(NATURE), 4, {"fc/kernel": 4})
    assert a.pieces == b.pieces


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_splitting_the_big_layer_balances_bytes(shards):
    a = Assignment(NATURE, shards, {"fc/kernel": shards})
    total = sum(a.bytes_per_shard)
    assert max(a.bytes_per_shard) <= total / shards * 1.15
    assert sorted({p.shard for p in a.pieces}) == list(range(shards))


def test_split_then_join_restores_every_variable():
    rng = np.random.default_rng(1)
    values = {n: rng.standard_normal(s).astype(np.float32) for n, s in NATURE}
    a = Assignment(NATURE, 3, {"fc/kernel": 5})
    per_shard = a.split(values)
    assert sum(len(p) for p in per_shard) == len(NATURE) + 4
    assert "fc/kernel#0/5" in {n for p in per_shard for n in p}
    merged = {n: v for shard in per_shard for n, v in shard.items()}
    joined = a.join(merged)
    for name, value in values.items():
        np.testing.assert_array_equal(joined[name], value)


def test_join_names_a_missing_piece():
    a = Assignment(NATURE, 2, {"fc/kernel": 2})
    pieces = {
        n: v for s in a.split({n: np.zeros(s, np.float32) for n, s in NATURE}) for n, v in s.items()
    }
    del pieces["fc/kernel#1/2"]
    with pytest.raises(KeyError, match="fc/kernel#1/2"):
        a.join(pieces)


def test_pieces_join_back_from_their_names_whatever_the_layout():
    variables = [("fc/kernel", (10, 3)), ("fc/bias", (3,)), ("conv/kernel", (2, 2))]
    values = {n: np.arange(np.prod(s), dtype=np.float32).reshape(s) for n, s in variables}
    for shards, splits in ((1, {}), (3, {"fc/kernel": 4}), (2, {"fc/kernel": 2})):
        layout = Assignment(variables, shards, splits)
        pieces = {k: v for shard in layout.split(values) for k, v in shard.items()}
        joined = join_by_names(pieces)
        assert set(joined) == set(values)
        for name, value in values.items():
            np.testing.assert_array_equal(joined[name], value)
    layout = Assignment(variables, 2, {"fc/kernel": 4})
    pieces = {k: v for shard in layout.split(values) for k, v in shard.items()}
    del pieces["fc/kernel#2/4"]
    with pytest.raises(ValueError, match=r"pieces \[2\] of 4 missing"):
        join_by_names(pieces)
    with pytest.raises(ValueError, match="NAME#i/n"):
        join_by_names({"fc/kernel#x": np.zeros(1)})
