"""Reading the full parameter set from every shard, as the evaluator: Register, then Pull.

`ShardReader.read()` returns a `Snapshot` (all variables joined with the shared shard
assignment, every shard's version, the environment frames). Each shard is pulled with
PullRequest.have_version set to what we already hold, so an unchanged shard sends no
parameters. It never writes to a shard: it registers as EVALUATOR and only pulls.

A shard that is not there yet (no address, unreachable, not initialised) is waited for
and retried, with a log line when the state changes, until `stop` is set; a shard that
moved to a new address (restarted on another port) is dialled again. Errors that waiting
cannot fix (wrong token, parameters that do not fit the model) raise `ReadError`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
import prometheus_client as prom
import structlog

from ba3c import rpc, tensors
from ba3c.rundir import RunDir
from ba3c.sharding import Assignment
from ba3c.v1 import paramserver_pb2 as ps
from ba3c.v1 import paramserver_pb2_grpc as ps_grpc

log = structlog.get_logger()

PULLS = prom.Counter(
    "ba3c_evaluator_pulls_total",
    "Pull calls to the shards, by outcome (new or unchanged).",
    ["outcome"],
)
PULL_SECONDS = prom.Histogram("ba3c_evaluator_pull_seconds", "Latency of one Pull call.")
PULL_BYTES = prom.Counter("ba3c_evaluator_pull_bytes_total", "Bytes of parameters pulled.")

# Waiting for a shard: short deadlines so that a stop request is noticed quickly.
CONNECT_TIMEOUT = 2.0
RETRY_PAUSE = (0.2, 2.0)  # first and longest pause between attempts, seconds
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.CANCELLED,
}


class ReadError(RuntimeError):
    """A problem with the shards that waiting will not fix; the message says what."""


@dataclass(frozen=True)
class Snapshot:
    weights: dict[str, np.ndarray]  # {variable: array}, joined from every shard
    versions: tuple[int, ...]  # per shard
    env_frames: int  # the largest shard counter (every shard counts all frames)

    @property
    def version(self) -> int:
        """The version every shard has reached (shards move together; this is the lowest)."""
        return min(self.versions)


class _Stopped(Exception):
    """A call cancelled because stop was set."""


class _Shard:
    """One shard's connection and what we last pulled from it."""

    def __init__(self, index: int):
        self.index = index
        self.address: str | None = None
        self.channel: grpc.Channel | None = None
        self.stub: ps_grpc.ParameterServerStub | None = None
        self.version = -1
        self.env_frames = 0
        self.pieces: dict[str, np.ndarray] = {}
        self.waiting_for: str | None = None  # what we last logged we were waiting for

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = self.stub = None


class ShardReader:
    def __init__(
        self,
        run_dir: RunDir,
        token: str,
        assignment: Assignment,
        client_id: str,
        max_message_bytes: int,
        rpc_timeout: float,
        stop: threading.Event,
    ):
        self.run_dir = run_dir
        self.token = token
        self.assignment = assignment
        self.client_id = client_id
        self.max_message_bytes = max_message_bytes
        self.rpc_timeout = rpc_timeout
        self.stop = stop
        self.shards = [_Shard(k) for k in range(assignment.num_shards)]
        self._expected = {
            k: {p.name: p.shape for p in assignment.shard_pieces(k)}
            for k in range(assignment.num_shards)
        }

    # -- the public calls ------------------------------------------------------------------
    def read(self) -> Snapshot | None:
        """Every shard's parameters (pulled only where the version moved); None if stopped."""
        for shard in self.shards:
            if not self._retrying(shard, self._pull):
                return None
        pieces: dict[str, np.ndarray] = {}
        for shard in self.shards:
            pieces.update(shard.pieces)
        return Snapshot(
            weights=self.assignment.join(pieces),
            versions=tuple(s.version for s in self.shards),
            env_frames=max(s.env_frames for s in self.shards),
        )

    def versions(self) -> tuple[int, ...] | None:
        """Every shard's current version (Status: no parameters travel); None if stopped."""
        out = []
        for shard in self.shards:
            reply = self._retrying(shard, self._status)
            if reply is None:
                return None
            out.append(reply.version)
        return tuple(out)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    # -- one shard -------------------------------------------------------------------------
    def _retrying(self, shard: _Shard, call):
        """Runs call(shard) until it succeeds; waits out what may pass. None if stopped."""
        pause = RETRY_PAUSE[0]
        while not self.stop.is_set():
            try:
                if not self._connected(shard):
                    self._waiting(shard, "no address in RUN_DIR/addresses/ yet")
                else:
                    result = call(shard)
                    if shard.waiting_for is not None:
                        log.info("shard ready", shard=shard.index, address=shard.address)
                        shard.waiting_for = None
                    return result
            except _Stopped:
                break
            except grpc.RpcError as e:
                code = e.code()
                if code not in RETRYABLE:
                    raise ReadError(
                        f"paramserver-{shard.index} at {shard.address}: {code.name}: {e.details()}"
                    ) from None
                if self.stop.is_set():
                    break
                self._waiting(shard, code.name, e.details())
                if code != grpc.StatusCode.FAILED_PRECONDITION:
                    shard.close()  # redial: it may have restarted on another port
            if self.stop.wait(pause):
                break
            pause = min(pause * 2, RETRY_PAUSE[1])
        return None

    def _waiting(self, shard: _Shard, why: str, details: str = "") -> None:
        """Logs once per change of reason, not on every retry."""
        if shard.waiting_for != why:
            log.info("waiting for shard", shard=shard.index, reason=why, details=details)
            shard.waiting_for = why

    def _connected(self, shard: _Shard) -> bool:
        """Dials and registers if needed. False while the shard has no address."""
        address = self.run_dir.read_address("paramserver", shard.index)
        if address is None:
            return False
        if shard.stub is not None and address == shard.address:
            return True
        shard.close()
        shard.address = address
        shard.version = -1  # a restarted shard may hold other values under the same version
        shard.channel = rpc.make_channel(address, self.token, self.max_message_bytes)
        shard.stub = ps_grpc.ParameterServerStub(shard.channel)
        try:
            reply = shard.stub.Register(
                ps.RegisterRequest(client_id=self.client_id, role=ps.EVALUATOR),
                timeout=CONNECT_TIMEOUT,
            )
        except grpc.RpcError:
            shard.close()
            raise
        if reply.shard_index != shard.index:
            raise ReadError(
                f"{address} (addresses/paramserver-{shard.index}) says it is shard "
                f"{reply.shard_index}"
            )
        log.info(
            "registered",
            shard=shard.index,
            address=address,
            version=reply.version,
            initialized=reply.initialized,
        )
        return True

    def _pull(self, shard: _Shard) -> _Shard:
        started = time.perf_counter()
        reply = self._call(
            shard.stub.Pull,
            ps.PullRequest(client_id=self.client_id, have_version=shard.version),
            self.rpc_timeout,
        )
        PULL_SECONDS.observe(time.perf_counter() - started)
        if reply.unchanged and reply.version == shard.version and shard.pieces:
            PULLS.labels("unchanged").inc()
            shard.env_frames = reply.env_frames
            return shard
        try:
            pieces = tensors.decode_named(reply.parameters)
        except tensors.TensorError as e:
            raise ReadError(f"paramserver-{shard.index} sent a bad tensor: {e}") from None
        self._check(shard.index, pieces)
        PULLS.labels("new").inc()
        PULL_BYTES.inc(sum(p.tensor.ByteSize() for p in reply.parameters))
        shard.pieces = pieces
        shard.version = reply.version
        shard.env_frames = reply.env_frames
        return shard

    def _status(self, shard: _Shard) -> ps.StatusResponse:
        return self._call(shard.stub.Status, ps.StatusRequest(), CONNECT_TIMEOUT)

    def _call(self, method, request, timeout: float):
        """A unary call that a stop request cancels (raising CANCELLED) instead of letting
        it wait out its deadline for a server that went away."""
        future = method.future(request, timeout=timeout)
        while not future.done():
            if self.stop.wait(0.05):
                future.cancel()
                raise _Stopped
        return future.result()

    def _check(self, index: int, pieces: dict[str, np.ndarray]) -> None:
        """The shard must hold exactly the pieces the assignment gives it, in their shapes."""
        expected = self._expected[index]
        got = {name: tuple(a.shape) for name, a in pieces.items()}
        if got == expected:
            return
        missing = sorted(set(expected) - set(got))
        unknown = sorted(set(got) - set(expected))
        wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if unknown:
            problems.append(f"unknown {unknown}")
        problems += [
            f"{n} has shape {list(got[n])}, the model expects {list(expected[n])}" for n in wrong
        ]
        raise ReadError(
            f"paramserver-{index} holds parameters that do not fit this model ("
            + "; ".join(problems)
            + "); is the evaluator using the run's config.toml?"
        )
