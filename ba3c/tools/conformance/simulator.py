"""`ba3c conformance simulator`: the kit serves Learner.Act as a fake learner and checks
what a simulator pool sends.

The kit binds a port, writes it to addresses/learner-I (I = --index) and waits for a pool;
start the pool under test on the same run directory, streaming to learner I (for ba3c's
own: `ba3c simulator --run-dir D --learner I`). The kit answers random actions and:
  stream 1: `--steps` exchanges, then ends the stream with UNAVAILABLE (a learner restart);
  stream 2: the pool must come back with a fresh stream; after 5 exchanges the kit answers
            with one action too many, which breaks the contract;
  stream 3: the pool must drop the broken stream and come back again.
Then the kit withdraws the address and stops; the pool keeps retrying until it is stopped.
Streams are scripted for the first pool_id the kit sees; a double-buffered pool's other
half (another pool_id) is answered normally and its requests are checked all the same.
Both observation modes are accepted: full observations, and the newest frame only
(PoolSpec.frame_stack = k >= 2, which must be the run's frame_stack).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2_grpc

from ba3c import envs, rpc
from ba3c.tools.conformance import wire
from ba3c.tools.conformance.suite import Failed, Skipped, Suite, expect
from ba3c.tools.conformance.target import KIT_MESSAGE_LIMIT, Target
from ba3c.v1 import learner_pb2 as pb
from ba3c.v1 import tensor_pb2

SERVICE = "ba3c.v1.Learner"
RESTART = "conformance kit: the learner is restarting"
SHORT = 5  # exchanges in streams 2 and 3
ENDED_WAIT = 10.0  # seconds for a stream the pool cancelled to end on this side


@dataclass
class Record:
    """What one stream from the pool carried, and every way it broke the contract."""

    index: int
    authorization: str = ""
    spec: pb.PoolSpec | None = None
    pool_id: str = ""
    requests: int = 0
    episodes: int = 0
    ended_by_pool: bool = False
    problems: dict[str, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def problem(self, check: str, message: str) -> None:
        stream = f"stream {self.index + 1}" if self.index >= 0 else "the other half's stream"
        self.problems.setdefault(check, f"{stream}, request {self.requests}: {message}")


def check_spec(spec: pb.PoolSpec) -> str:
    """What is wrong with a PoolSpec ("" if nothing)."""
    if not spec.env_id:
        return "spec.env_id is empty"
    if spec.num_envs < 1:
        return f"spec.num_envs {spec.num_envs} < 1"
    if not spec.observation_shape or any(d < 1 for d in spec.observation_shape):
        return f"spec.observation_shape {list(spec.observation_shape)} is not a shape"
    if spec.observation_dtype not in wire.NUMPY or spec.observation_dtype == tensor_pb2.INT64:
        return f"spec.observation_dtype {spec.observation_dtype} is not an observation type"
    if spec.num_actions < 1:
        return f"spec.num_actions {spec.num_actions} < 1"
    shape, k = list(spec.observation_shape), spec.frame_stack
    if k < 0 or (k >= 2 and (len(shape) != 3 or shape[-1] % k)):
        return f"spec.frame_stack {k} cannot stack frames into {shape}"
    return ""


def wire_shape(spec: pb.PoolSpec) -> list[int]:
    """What each request's observations must be: [N, *shape], or the newest frame."""
    shape = [spec.num_envs, *spec.observation_shape]
    if spec.frame_stack >= 2:
        shape[-1] //= spec.frame_stack
    return shape


class FakeLearner:
    """Serves Learner.Act; checks every request; scripts how each stream ends."""

    def __init__(self, target: Target, steps: int):
        self.t = target
        self.steps = steps
        self.records: list[Record] = []
        self.others: list[Record] = []  # streams of another pool_id (the other half)
        self.pool_id: str | None = None  # the scripted one: the first seen
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.rng = np.random.default_rng(16)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(8, thread_name_prefix="fake-learner"),
            options=[
                ("grpc.max_send_message_length", KIT_MESSAGE_LIMIT),
                ("grpc.max_receive_message_length", KIT_MESSAGE_LIMIT),
            ],
        )
        handler = grpc.stream_stream_rpc_method_handler(self.act)  # raw bytes both ways
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Act": handler}),)
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        host = rpc.bind_host(target.cfg.net.host)
        port = self.server.add_insecure_port(f"{host}:0")
        if not port:
            raise Failed(f"cannot listen on {host}")
        self.address = f"{host}:{port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait()

    def stream(self, index: int, timeout: float) -> Record:
        """Waits until stream `index` (0-based) has ended."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.records) > index, timeout)
        if not arrived:
            raise Failed(f"no stream {index + 1} from the pool within {timeout:.0f}s")
        record = self.records[index]
        if not record.done.wait(timeout + self.steps):
            raise Failed(f"stream {index + 1} did not end")
        return record

    # -- the handler ------------------------------------------------------------------------
    def act(self, requests: Iterator[bytes], context: grpc.ServicerContext):
        first = next(requests, None)
        if first is None:
            return
        try:
            pool_id = pb.ActRequest.FromString(first).pool_id
        except Exception:  # noqa: BLE001 - _check reports it
            pool_id = ""
        with self._arrived:
            if self.pool_id is None:
                self.pool_id = pool_id
            if pool_id != self.pool_id:
                record = Record(-1)
                self.others.append(record)
            else:
                record = Record(next(self._counter))
                self.records.append(record)
                self._arrived.notify_all()
        try:
            yield from self._serve(record, itertools.chain([first], requests), context)
        finally:
            record.done.set()

    def _serve(self, record: Record, requests: Iterator[bytes], context):
        metadata = dict(context.invocation_metadata())
        record.authorization = str(metadata.get("authorization", ""))
        if record.authorization != f"Bearer {self.t.token}":
            record.problem("token", f"authorization {record.authorization!r}")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong run token")
        limit = self.steps if record.index == 0 else SHORT
        if record.index < 0:  # another half: never scripted
            limit = 1 << 62
        try:
            for data in requests:
                self._check(record, data)
                record.requests += 1
                spec = record.spec
                if spec is None or record.index > 2:
                    context.abort(grpc.StatusCode.UNAVAILABLE, RESTART)
                if record.requests > limit and record.index != 1:
                    context.abort(grpc.StatusCode.UNAVAILABLE, RESTART)
                n = spec.num_envs + (record.index == 1 and record.requests > limit)
                actions = self.rng.integers(0, spec.num_actions, n)
                yield pb.ActResponse(
                    actions=actions.tolist(), version=record.requests
                ).SerializeToString()
        except grpc.RpcError:
            pass
        except GeneratorExit:
            # the pool cancelled the call while its response was on the way: gRPC closes
            # this generator instead of ending the request iterator
            record.ended_by_pool = True
            raise
        record.ended_by_pool = True

    def _check(self, record: Record, data: bytes) -> None:
        try:
            request = pb.ActRequest.FromString(data)
        except Exception as e:  # noqa: BLE001 - any parse failure is the pool's
            record.problem("requests.parse", f"not an ActRequest: {e}")
            return
        t = record.requests
        if t == 0:
            if not request.HasField("spec"):
                record.problem("first.spec", "the first request has no spec")
                return
            wrong = check_spec(request.spec)
            if wrong:
                record.problem("first.spec", wrong)
                return
            record.spec = request.spec
            record.pool_id = request.pool_id
            if request.rewards or request.dones or request.finished_episodes:
                record.problem("first.no_outcomes", "rewards/dones/finished_episodes in request 0")
        spec = record.spec
        if spec is None:
            return
        if request.pool_id != record.pool_id or not request.pool_id:
            record.problem("pool_id", f"pool_id {request.pool_id!r} (first: {record.pool_id!r})")
        n = spec.num_envs
        want = wire_shape(spec)
        obs = request.observations
        try:
            array = wire.decode(obs)
        except ValueError as e:
            record.problem("observations", str(e))
        else:
            if list(obs.shape) != want or obs.dtype != spec.observation_dtype:
                record.problem(
                    "observations",
                    f"dtype {obs.dtype} shape {list(obs.shape)}, spec says "
                    f"{spec.observation_dtype} {want}",
                )
            elif array.dtype.kind == "f" and not np.isfinite(array).all():
                record.problem("observations", "NaN or Inf in observations")
        if t == 0:
            return
        if len(request.rewards) != n or len(request.dones) != n:
            record.problem(
                "steps.rewards_dones",
                f"{len(request.rewards)} rewards and {len(request.dones)} dones for {n} envs",
            )
            return
        if not all(math.isfinite(r) for r in request.rewards):
            record.problem("steps.rewards_dones", "NaN or Inf in rewards")
        if request.env_frames < n:
            record.problem("steps.env_frames", f"env_frames {request.env_frames} < num_envs {n}")
        for ep in request.finished_episodes:
            record.episodes += 1
            if not 0 <= ep.env_index < n or not request.dones[ep.env_index]:
                record.problem(
                    "steps.finished_episodes",
                    f"an episode of env {ep.env_index} ended, but its done is not set",
                )
            elif not 1 <= ep.length <= t or ep.frames < ep.length:
                record.problem(
                    "steps.finished_episodes",
                    f"episode length {ep.length}, frames {ep.frames} after {t} steps of a "
                    "stream (every stream starts fresh episodes)",
                )
            elif not math.isfinite(ep.episode_return):
                record.problem("steps.finished_episodes", "episode_return is not finite")


class SimulatorChecks:
    def __init__(self, target: Target, suite: Suite, steps: int):
        self.t = target
        self.suite = suite
        self.steps = max(10, steps)
        self.fake: FakeLearner | None = None
        self.records: list[Record] = []

    def start(self) -> str:
        self.fake = FakeLearner(self.t, self.steps)
        self.t.run_dir.write_address("learner", self.t.index, self.fake.address)
        return self.fake.address

    def problems(self, check: str) -> None:
        expect(self.records, "no stream to check")
        assert self.fake is not None
        for r in self.records + self.fake.others:
            if check in r.problems:
                raise Failed(r.problems[check])

    def stream(self, index: int) -> None:
        assert self.fake is not None
        self.records.append(self.fake.stream(index, self.t.timeout))

    def first_stream(self) -> None:
        self.stream(0)
        r = self.records[0]
        expect(r.spec is not None, "no valid spec: see first.spec")
        expect(r.requests > self.steps, f"the pool left after {r.requests} requests")

    def reconnect(self, index: int) -> None:
        if len(self.records) < index:
            raise Failed(f"stream {index} did not happen")
        self.stream(index)
        new, old = self.records[index], self.records[0]
        expect(new.spec == old.spec, f"spec changed: {old.spec} -> {new.spec}")
        expect(new.pool_id == old.pool_id, f"pool_id changed: {old.pool_id} -> {new.pool_id}")
        expect(new.requests >= 1, "the new stream sent nothing")

    def after_bad_response(self) -> None:
        self.reconnect(2)
        r = self.records[1]
        # the pool may open its next stream before gRPC has told this side that it
        # cancelled the broken one: give the cancellation a moment to arrive
        r.done.wait(ENDED_WAIT)
        expect(r.ended_by_pool, "the pool did not end the stream that broke the contract")
        expect(
            r.requests == SHORT + 1,
            f"the pool sent {r.requests - SHORT - 1} more requests after a response with "
            "the wrong number of actions",
        )

    def spec_matches_config(self) -> None:
        """The pool steps the run's environment (config.toml), as a learner of the run
        expects: env_id, observation shape and dtype, number of actions."""
        spec = next((r.spec for r in self.records if r.spec is not None), None)
        expect(spec is not None, "no valid spec")
        try:
            env = envs.describe(self.t.cfg)
        except envs.EnvError as e:
            raise Skipped(f"cannot describe {self.t.cfg.run.env!r} here: {e}") from None
        want = (
            env.env_id,
            list(env.observation_shape),
            wire.WIRE_DTYPES[np.dtype(env.observation_dtype)],
            env.num_actions,
        )
        got = (
            spec.env_id,
            list(spec.observation_shape),
            spec.observation_dtype,
            spec.num_actions,
        )
        expect(got == want, f"spec (env_id, shape, dtype, actions) {got}, config says {want}")
        if spec.frame_stack >= 2:
            expect(
                spec.frame_stack == self.t.cfg.env.frame_stack,
                f"spec.frame_stack {spec.frame_stack}, config says {self.t.cfg.env.frame_stack}",
            )

    def episodes(self) -> None:
        assert self.fake is not None
        total = sum(r.episodes for r in self.records + self.fake.others)
        if not total:
            raise Skipped(f"no episode ended in {self.steps} steps (try more --steps)")

    def run(self) -> None:
        c = self.suite.check
        address = c("address", self.start)
        if not address:
            return
        try:
            c("connect", self.first_stream)
            c("reconnect.after_unavailable", self.reconnect, 1)
            c("reconnect.after_bad_response", self.after_bad_response)
        finally:
            self.t.run_dir.remove_address("learner", self.t.index)
            assert self.fake is not None
            self.fake.stop()
        for check in (
            "token",
            "requests.parse",
            "first.spec",
            "first.no_outcomes",
            "pool_id",
            "observations",
            "steps.rewards_dones",
            "steps.env_frames",
            "steps.finished_episodes",
        ):
            c(check, self.problems, check)
        c("first.spec_matches_config", self.spec_matches_config)
        c("episodes", self.episodes)


def run(target: Target, suite: Suite, steps: int = 300) -> None:
    SimulatorChecks(target, suite, steps).run()
