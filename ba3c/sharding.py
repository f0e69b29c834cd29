"""Which parameter-server shard holds which variable: one deterministic assignment.

Learners and the evaluator compute the same `Assignment` from the same inputs (the model's
variables in order, the number of shards, the splits), so they agree on where every
variable lives without asking anyone. A large variable may be cut into pieces along its
first axis and spread over shards, as the seed did with `--fc_splits` for its fully
connected layer. Pieces are then placed largest first, each on the shard with the fewest
bytes so far (ties to the lowest index), which balances bytes across shards.

Piece names: a whole variable keeps its name; piece i of n is "NAME#i/n".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Piece:
    name: str  # name on the wire and on the shard
    variable: str  # the model variable it is cut from
    shape: tuple[int, ...]  # shape of the piece
    start: int  # rows [start, stop) of the variable's first axis
    stop: int
    shard: int
    whole: bool  # True if the piece is the whole variable

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Assignment:
    """Variables -> pieces -> shards; splits whole arrays into pieces and joins them back."""

    def __init__(
        self,
        variables: Sequence[tuple[str, Sequence[int]]],
        num_shards: int,
        splits: Mapping[str, int] | None = None,
        itemsize: int = 4,
    ):
        if num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, got {num_shards}")
        self.num_shards = num_shards
        self.variables = {name: tuple(int(d) for d in shape) for name, shape in variables}
        if len(self.variables) != len(variables):
            raise ValueError("variable names must be unique")
        splits = dict(splits or {})
        for name in splits:
            if name not in self.variables:
                raise ValueError(f"cannot split unknown variable {name!r}")

        unplaced: list[tuple[str, str, tuple[int, ...], int, int, bool]] = []
        for name, shape in self.variables.items():
            n = splits.get(name, 1)
            rows = shape[0] if shape else 1
            n = max(1, min(n, rows))
            if n == 1:
                unplaced.append((name, name, shape, 0, rows, True))
                continue
            bounds = np.linspace(0, rows, n + 1).round().astype(int)
            for i in range(n):
                start, stop = int(bounds[i]), int(bounds[i + 1])
                unplaced.append(
                    (f"{name}#{i}/{n}", name, (stop - start, *shape[1:]), start, stop, False)
                )

        load = [0] * num_shards
        pieces: list[Piece] = []
        order = sorted(unplaced, key=lambda p: (-int(np.prod(p[2], dtype=np.int64)), p[0]))
        for piece_name, var, shape, start, stop, whole in order:
            shard = min(range(num_shards), key=lambda k: (load[k], k))
            load[shard] += int(np.prod(shape, dtype=np.int64)) * itemsize
            pieces.append(Piece(piece_name, var, shape, start, stop, shard, whole))
        # keep the model's variable order for readability and stable iteration
        position = {name: i for i, name in enumerate(self.variables)}
        self.pieces = sorted(pieces, key=lambda p: (position[p.variable], p.start))
        self.bytes_per_shard = load

    def shard_pieces(self, shard: int) -> list[Piece]:
        return [p for p in self.pieces if p.shard == shard]

    def split(self, values: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """{variable: array} -> one {piece name: array} per shard (views, no copies)."""
        out: list[dict[str, np.ndarray]] = [{} for _ in range(self.num_shards)]
        for p in self.pieces:
            array = values[p.variable]
            out[p.shard][p.name] = array if p.whole else array[p.start : p.stop]
        return out

    def join(self, pieces: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{piece name: array} from all shards -> {variable: array}. Missing pieces raise."""
        out: dict[str, np.ndarray] = {}
        for name, shape in self.variables.items():
            parts = [p for p in self.pieces if p.variable == name]
            missing = [p.name for p in parts if p.name not in pieces]
            if missing:
                raise KeyError(f"missing pieces {missing} of variable {name!r}")
            if len(parts) == 1 and parts[0].whole:
                out[name] = np.asarray(pieces[parts[0].name]).reshape(shape)
            else:
                out[name] = np.concatenate([pieces[p.name] for p in parts], axis=0)
        return out


def join_by_names(pieces: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{piece name: array} -> {variable: array} from the piece names alone ("NAME" or
    "NAME#i/n"), whatever shard count and splits wrote them: for reading another run's
    checkpoints (warm start, the best checkpoint). Missing or extra pieces raise ValueError."""
    parts: dict[str, dict[int, np.ndarray]] = {}
    counts: dict[str, int] = {}
    for name, array in pieces.items():
        variable, sep, fraction = name.partition("#")
        i, n = (0, 1)
        if sep:
            try:
                i, n = (int(x) for x in fraction.split("/"))
            except ValueError:
                raise ValueError(f"piece name {name!r} is not NAME#i/n") from None
        if counts.setdefault(variable, n) != n or not 0 <= i < n:
            raise ValueError(f"piece {name!r} does not fit the other pieces of {variable!r}")
        parts.setdefault(variable, {})[i] = np.asarray(array)
    out: dict[str, np.ndarray] = {}
    for variable, found in parts.items():
        missing = sorted(set(range(counts[variable])) - set(found))
        if missing:
            raise ValueError(
                f"variable {variable!r}: pieces {missing} of {counts[variable]} missing"
            )
        ordered = [found[i] for i in range(counts[variable])]
        out[variable] = ordered[0] if len(ordered) == 1 else np.concatenate(ordered, axis=0)
    return out
