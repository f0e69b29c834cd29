"""`ba3c conformance paramserver`: drives one shard (addresses/paramserver-K) through every
RPC of paramserver.proto and checks the answers against docs/contracts.md.

The shard must be fresh (never initialized, no checkpoint) and use the run's config.toml:
the kit reads the optimizer, mode, replicas, timeouts and message limit from it. The kit
initializes the shard with its own small model, so use a throw-away run directory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import grpc
import numpy as np

from ba3c.tools.conformance import wire
from ba3c.tools.conformance.reference import Reference, max_error
from ba3c.tools.conformance.suite import Failed, Skipped, Suite, expect, expect_code
from ba3c.tools.conformance.target import (
    GARBAGE,
    Target,
    check_health,
    check_health_needs_token,
    check_refuses_token,
    raw_unary,
    wait_address,
)
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc
from ba3c.v1 import tensor_pb2

SERVICE = "ba3c.v1.ParameterServer"
SHAPES = {"conformance/kernel": (3, 4), "conformance/bias": (4,), "conformance/scalar": ()}
TOLERANCE = 1e-6
INVALID = grpc.StatusCode.INVALID_ARGUMENT
F32, BF16, F16 = tensor_pb2.FLOAT32, tensor_pb2.BFLOAT16, tensor_pb2.FLOAT16
I32 = tensor_pb2.INT32


def initial_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(16)
    return {n: rng.uniform(0.5, 1.5, s).astype(np.float32) for n, s in SHAPES.items()}


class ParamServerChecks:
    def __init__(self, target: Target, suite: Suite):
        self.t = target
        self.suite = suite
        self.cfg = target.cfg
        self.sync = self.cfg.paramserver.use_sync
        self.replicas = self.cfg.paramserver.replicas_to_aggregate if self.sync else 1
        self.address = ""
        self.stub: pb_grpc.ParameterServerStub | None = None
        self.reference: Reference | None = None
        self.params: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(1616)
        # what Status must say, tracked from what the kit did
        self.version = 0
        self.env_frames = 0
        self.applied = 0
        self.dropped = 0

    # -- helpers --------------------------------------------------------------------------
    def _raw(self, method: str, data: bytes) -> bytes:
        with self.t.channel(self.address) as channel:
            return raw_unary(channel, f"/{SERVICE}/{method}", data)

    def gradients(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {
            n: (scale * self.rng.standard_normal(s)).astype(np.float32) for n, s in SHAPES.items()
        }

    def push(self, client_id: str, version: int, grads, dtype=F32, env_frames=0, **kw):
        request = pb.PushPullRequest(
            client_id=client_id,
            version=version,
            gradients=wire.named(grads, dtype) if isinstance(grads, Mapping) else grads,
            env_frames=env_frames,
            samples=kw.pop("samples", 1),
        )
        return self.stub.PushPull(request, timeout=kw.pop("timeout", 60))

    def status(self) -> pb.StatusResponse:
        return self.stub.Status(pb.StatusRequest(), timeout=30)

    def pulled(self) -> dict[str, np.ndarray]:
        reply = self.stub.Pull(pb.PullRequest(client_id="conformance", have_version=-1), timeout=30)
        return wire.decode_named(reply.parameters)

    def snapshot(self) -> tuple:
        s = self.status()
        state = (s.initialized, s.version, s.env_frames, s.pushes_applied, s.pushes_dropped)
        if not s.initialized:
            return state, None
        return state, {n: a.tobytes() for n, a in self.pulled().items()}

    def refused(self, call: Callable[[], object], code=INVALID, contains: str = "") -> None:
        """`call` fails with `code` (and `contains` in the message); nothing changes."""
        before = self.snapshot()
        expect_code(call, code, contains)
        after = self.snapshot()
        expect(after == before, f"state changed by a refused call: {before[0]} -> {after[0]}")

    def expect_status(self) -> None:
        s = self.status()
        want = (self.version, self.env_frames, self.applied, self.dropped)
        got = (s.version, s.env_frames, s.pushes_applied, s.pushes_dropped)
        expect(
            got == want,
            f"Status (version, env_frames, pushes_applied, pushes_dropped) is {got}, "
            f"expected {want}",
        )

    def expect_params(self, got: Mapping[str, np.ndarray], what: str) -> None:
        assert self.reference is not None
        expect(set(got) == set(SHAPES), f"{what}: variables {sorted(got)}")
        for name, shape in SHAPES.items():
            expect(got[name].shape == shape, f"{what}: {name} has shape {got[name].shape}")
        err, where = max_error(got, self.reference.params)
        expect(
            err <= TOLERANCE,
            f"{what}: parameters differ from the reference ({self.cfg.optim.optimizer}, "
            f"step {self.reference.steps}) by {err:.3g} in {where!r} (tolerance {TOLERANCE})",
        )

    # -- the checks -------------------------------------------------------------------------
    def run(self) -> None:
        c = self.suite.check
        self.address = c("address", wait_address, self.t, "paramserver")
        if not self.address:
            return
        self.channel = self.t.channel(self.address)
        self.stub = pb_grpc.ParameterServerStub(self.channel)
        status_method = f"/{SERVICE}/Status"
        c("token.missing", check_refuses_token, self.t, self.address, status_method, None)
        c("token.wrong", check_refuses_token, self.t, self.address, status_method, "wrong")
        c("health.token", check_health_needs_token, self.t, self.address)
        c("health.serving", check_health, self.t, self.address, SERVICE)
        c("status.fresh", self.status_fresh)
        c("uninitialized.pushpull", self.uninitialized_push)
        c("uninitialized.pull", self.uninitialized_pull)
        c("register.empty_client_id", self.refused, self.register_call("", pb.LEARNER))
        c("register.role_unspecified", self.refused, self.register_call("x", 0))
        c("register.garbage", self.refused, lambda: self._raw("Register", GARBAGE))
        c("register.learner", self.register_learner)
        for name, broken in self.broken_initializations().items():
            contains = {"empty": "", "no_tensor": "tensor", "empty_name": "name"}.get(
                name, "conformance/kernel"
            )
            c(f"initialize.{name}", self.refused, self.initialize_call(broken), INVALID, contains)
        c("initialize.garbage", self.refused, lambda: self._raw("Initialize", GARBAGE))
        c("initialize.applied", self.initialize)
        if not self.params:
            return
        c("register.variables", self.register_variables)
        c("pull.values", self.pull_values)
        c("pull.unchanged", self.pull_unchanged)
        c("initialize.again", self.initialize_again)
        bad = initial_values() | {"conformance/bias": np.full(4, np.nan, np.float32)}
        c("initialize.nan_when_initialized", self.refused, self.initialize_call(wire.named(bad)))
        for name, call, contains in self.broken_pushes():
            c(f"pushpull.{name}", self.refused, call, INVALID, contains)
        c("pushpull.garbage", self.refused, lambda: self._raw("PushPull", GARBAGE))
        c("pushpull.message_too_large", self.message_too_large)
        c("optimizer.steps", self.optimizer_steps, 5, F32)
        c("optimizer.bfloat16", self.optimizer_steps, 1, BF16)
        c("optimizer.float16", self.optimizer_steps, 1, F16)
        c("pull.after_push", self.pull_after_push)
        c("pull.bfloat16", self.pull_bfloat16)
        c("register.optional", self.register_optional)
        c("register.evaluator_not_live", self.evaluator_not_live)
        if self.sync:
            c("sync.stale", self.sync_stale)
            c("sync.surplus", self.sync_surplus)
            c("sync.timeout", self.sync_timeout)
            c("sync.missed_learner_not_waited_for", self.sync_not_waited)
            c("sync.learner_rejoins", self.sync_rejoins)
        else:
            c("async.staleness", self.async_staleness)
            c("async.dropped_stale", self.async_dropped_stale)
        c("status.counters", self.expect_status)
        self.channel.close()

    def status_fresh(self) -> None:
        s = self.status()
        expect(
            not s.initialized,
            "the shard is already initialized: the kit needs a fresh shard (a new run "
            "directory, no checkpoint)",
        )
        expect(s.shard_index == self.t.index, f"shard_index {s.shard_index}, not {self.t.index}")
        mode = pb.SYNC if self.sync else pb.ASYNC
        expect(s.mode == mode, f"mode {pb.Mode.Name(s.mode)}, config says {pb.Mode.Name(mode)}")
        expect(s.version == 0 and s.env_frames == 0, f"version {s.version}, frames {s.env_frames}")
        expect(s.checkpoint_version == -1, f"checkpoint_version {s.checkpoint_version}, not -1")
        expect(s.num_variables == 0, f"num_variables {s.num_variables} before Initialize")

    def uninitialized_push(self) -> None:
        grads = {n: np.zeros(s, np.float32) for n, s in SHAPES.items()}
        self.refused(
            lambda: self.push("conformance-0", 0, grads), grpc.StatusCode.FAILED_PRECONDITION
        )

    def uninitialized_pull(self) -> None:
        expect_code(
            lambda: self.stub.Pull(pb.PullRequest(client_id="c", have_version=-1), timeout=30),
            grpc.StatusCode.FAILED_PRECONDITION,
        )

    def register_call(self, client_id: str, role: int) -> Callable[[], object]:
        request = pb.RegisterRequest(client_id=client_id, role=role)
        return lambda: self.stub.Register(request, timeout=30)

    def register_learner(self) -> None:
        r = self.register_call("conformance-learner", pb.LEARNER)()
        ps = self.cfg.paramserver
        expect(r.shard_index == self.t.index, f"shard_index {r.shard_index}")
        expect(r.mode == (pb.SYNC if self.sync else pb.ASYNC), f"mode {pb.Mode.Name(r.mode)}")
        if self.sync:
            expect(r.replicas_to_aggregate == ps.replicas_to_aggregate, "replicas_to_aggregate")
        expect(r.version == 0 and not r.initialized, f"version {r.version}, {r.initialized=}")
        expect(not r.variables, "variables listed before Initialize")
        expect(abs(r.lease_seconds - ps.lease_seconds) < 1e-9, f"lease_seconds {r.lease_seconds}")

    def broken_initializations(self) -> dict[str, list]:
        good = initial_values()
        k = "conformance/kernel"

        def replace(t: tensor_pb2.Tensor | None, name: str = k) -> list:
            items = [x for x in wire.named(good) if x.name != k]
            item = tensor_pb2.NamedTensor(name=name)
            if t is not None:
                item.tensor.CopyFrom(t)
            return [*items, item]

        full = wire.tensor(good[k])
        return {
            "empty": [],
            "not_float32": replace(wire.tensor(good[k].astype(np.int32), I32)),
            "nan": replace(wire.tensor(np.full((3, 4), np.nan, np.float32))),
            "inf": replace(wire.tensor(np.full((3, 4), np.inf, np.float32))),
            "no_tensor": replace(None),
            "byte_count": replace(tensor_pb2.Tensor(dtype=F32, shape=[3, 4], data=full.data[:-4])),
            "negative_dim": replace(tensor_pb2.Tensor(dtype=F32, shape=[-3, 4])),
            "dtype_unspecified": replace(tensor_pb2.Tensor(shape=[3, 4], data=full.data)),
            "duplicate": [*wire.named(good), tensor_pb2.NamedTensor(name=k, tensor=full)],
            "empty_name": replace(full, name=""),
        }

    def initialize_call(self, items: list) -> Callable[[], object]:
        request = pb.InitializeRequest(client_id="conformance-learner", parameters=items)
        return lambda: self.stub.Initialize(request, timeout=30)

    def initialize(self) -> None:
        values = initial_values()
        reply = self.initialize_call(wire.named(values))()
        expect(reply.applied, f"applied false: {reply.message!r}")
        expect(reply.version == 0, f"version {reply.version}")
        self.params = values
        self.reference = Reference(self.cfg.optim, values)
        s = self.status()
        expect(s.initialized, "Status.initialized false after Initialize")
        expect(s.num_variables == len(SHAPES), f"num_variables {s.num_variables}")
        size = sum(int(np.prod(x)) for x in SHAPES.values())
        expect(s.num_parameters == size, f"num_parameters {s.num_parameters}, not {size}")

    def register_variables(self) -> None:
        r = self.register_call("conformance-learner", pb.LEARNER)()
        expect(r.initialized, "initialized false after Initialize")
        got = {v.name: (v.dtype, tuple(v.shape)) for v in r.variables}
        want = {n: (F32, s) for n, s in SHAPES.items()}
        expect(got == want, f"variables {got}, expected {want}")

    def pull_values(self) -> None:
        reply = self.stub.Pull(pb.PullRequest(client_id="c", have_version=-1), timeout=30)
        expect(not reply.unchanged and reply.version == 0, f"version {reply.version}")
        got = wire.decode_named(reply.parameters)
        for item in reply.parameters:
            expect(item.tensor.dtype == F32, f"{item.name}: parameters must be float32")
        expect(set(got) == set(SHAPES), f"variables {sorted(got)}")
        for n, a in initial_values().items():
            expect(np.array_equal(got[n], a), f"{n}: not the initial values")

    def pull_unchanged(self) -> None:
        reply = self.stub.Pull(pb.PullRequest(client_id="c", have_version=self.version), timeout=30)
        expect(reply.unchanged, "unchanged false for have_version == version")
        expect(not reply.parameters, "parameters sent although unchanged")
        expect(reply.version == self.version, f"version {reply.version}")

    def initialize_again(self) -> None:
        other = {n: a + 1 for n, a in initial_values().items()}
        reply = self.initialize_call(wire.named(other))()
        expect(not reply.applied, "a second Initialize was applied")
        expect(reply.message.strip(), "no message saying the shard is already initialized")
        expect(reply.version == self.version, f"version {reply.version}")
        got = self.pulled()
        expect(all(np.array_equal(got[n], a) for n, a in initial_values().items()), "changed")

    def broken_pushes(self) -> list[tuple[str, Callable[[], object], str]]:
        good = self.gradients()
        k, b = "conformance/kernel", "conformance/bias"
        items = wire.named(good)

        def with_kernel(t: tensor_pb2.Tensor | None) -> list:
            item = tensor_pb2.NamedTensor(name=k)
            if t is not None:
                item.tensor.CopyFrom(t)
            return [x for x in items if x.name != k] + [item]

        def call(grads, version=0, client_id="conformance-0", env_frames=0):
            return lambda: self.push(client_id, version, grads, env_frames=env_frames)

        nan = good[k].copy()
        nan[1, 2] = np.nan
        inf = good[k].copy()
        inf[0, 0] = -np.inf
        full = wire.tensor(good[k])
        unknown = tensor_pb2.NamedTensor(name="conformance/unknown", tensor=full)
        return [
            ("unknown_variable", call([*items, unknown]), "conformance/unknown"),
            ("missing_variable", call([x for x in items if x.name != b]), b),
            ("duplicate", call([*items, tensor_pb2.NamedTensor(name=k, tensor=full)]), k),
            ("wrong_shape", call(with_kernel(wire.tensor(good[k].T))), k),
            ("wrong_dtype", call(with_kernel(wire.tensor(good[k].astype(np.int32), I32))), k),
            ("nan", call(with_kernel(wire.tensor(nan))), k),
            ("inf", call(with_kernel(wire.tensor(inf))), k),
            (
                "byte_count",
                call(with_kernel(tensor_pb2.Tensor(dtype=F32, shape=[3, 4], data=full.data[4:]))),
                k,
            ),
            ("no_tensor", call(with_kernel(None)), "tensor"),
            ("future_version", call(good, version=self.version + 1), "version"),
            ("negative_version", call(good, version=-1), "version"),
            ("negative_env_frames", call(good, env_frames=-5), "env_frames"),
            ("empty_client_id", call(good, client_id=""), "client_id"),
        ]

    def message_too_large(self) -> None:
        limit = self.cfg.net.max_message_mb << 20
        if limit > 64 << 20:
            raise Skipped(f"max_message_mb = {self.cfg.net.max_message_mb}: too large to send")
        huge = tensor_pb2.NamedTensor(
            name="conformance/kernel",
            tensor=tensor_pb2.Tensor(dtype=F32, shape=[limit // 4 + 1], data=bytes(limit + 4)),
        )
        self.refused(
            lambda: self.push("conformance-0", self.version, [huge]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )

    def round(self, grads_list: list[dict[str, np.ndarray]], dtype: int, frames: int = 3):
        """One update: a push (async) or `replicas` concurrent pushes (sync), each from its
        own client_id; returns the replies in client order."""
        version = self.version
        if not self.sync:
            replies = [self.push("conformance-0", version, grads_list[0], dtype, frames)]
        else:
            replies = parallel(
                [
                    lambda i=i: self.push(f"conformance-{i}", version, grads_list[i], dtype, frames)
                    for i in range(len(grads_list))
                ]
            )
        sent = [{n: wire.as_sent(g, dtype) for n, g in grads.items()} for grads in grads_list]
        mean = {n: np.mean([np.float64(s[n]) for s in sent], axis=0) for n in SHAPES}
        assert self.reference is not None
        self.reference.apply(mean, version)
        self.version += 1
        self.applied += len(grads_list)
        self.env_frames += frames * len(grads_list)
        for r in replies:
            expect(r.outcome == pb.APPLIED, f"outcome {pb.PushOutcome.Name(r.outcome)}")
            expect(r.version == self.version, f"version {r.version}, expected {self.version}")
            expect(r.staleness == 0, f"staleness {r.staleness}")
            expect(r.env_frames == self.env_frames, f"env_frames {r.env_frames}")
            self.expect_params(wire.decode_named(r.parameters), f"after version {r.version}")
        return replies

    def optimizer_steps(self, steps: int, dtype: int) -> None:
        for step in range(steps):
            scale = 10.0 ** (step % 3 - 1)  # 0.1, 1, 10: Adam's normalisation must show
            self.round([self.gradients(scale) for _ in range(self.replicas)], dtype)

    def pull_after_push(self) -> None:
        reply = self.stub.Pull(pb.PullRequest(client_id="c", have_version=0), timeout=30)
        expect(not reply.unchanged and reply.version == self.version, f"version {reply.version}")
        expect(reply.env_frames == self.env_frames, f"env_frames {reply.env_frames}")
        self.expect_params(wire.decode_named(reply.parameters), "Pull")

    def pull_bfloat16(self) -> None:
        """parameters_dtype BFLOAT16: each tensor is the float32 value rounded to the
        nearest bfloat16, or (a shard that predates the field) the float32 value itself."""
        exact = self.pulled()
        request = pb.PullRequest(client_id="c", have_version=-1, parameters_dtype=BF16)
        reply = self.stub.Pull(request, timeout=30)
        got = wire.decode_named(reply.parameters)
        expect(set(got) == set(exact), f"variables {sorted(got)}")
        for item in reply.parameters:
            name, dtype = item.name, item.tensor.dtype
            expect(dtype in (F32, BF16), f"{name}: dtype {dtype}, not FLOAT32 or BFLOAT16")
            want = exact[name] if dtype == F32 else wire.as_sent(exact[name], BF16)
            expect(np.array_equal(got[name], want), f"{name}: not the values rounded to bfloat16")

    def register_optional(self) -> None:
        """A client_id that never called Register may push (async: applied at once)."""
        if self.sync:
            self.round([self.gradients() for _ in range(self.replicas)], F32)
            return
        version = self.version
        reply = self.push("conformance-unregistered", version, g := self.gradients(), F32, 2)
        self.reference.apply(g, version)
        self.version += 1
        self.applied += 1
        self.env_frames += 2
        expect(reply.outcome == pb.APPLIED, f"outcome {pb.PushOutcome.Name(reply.outcome)}")
        self.expect_params(wire.decode_named(reply.parameters), "unregistered push")

    def evaluator_not_live(self) -> None:
        before = self.status().live_learners
        self.register_call("conformance-evaluator", pb.EVALUATOR)()
        after = self.status().live_learners
        expect(after == before, f"live_learners {before} -> {after} after an evaluator registered")

    # -- async ------------------------------------------------------------------------------
    def async_staleness(self) -> None:
        bound = self.cfg.paramserver.max_staleness
        if bound == 1 or self.version < 1:
            raise Skipped(f"max_staleness = {bound}: no staleness to accept")
        stale = 1 if bound == 0 else min(bound, self.version)
        version = self.version
        reply = self.push("conformance-0", version - stale, g := self.gradients(), F32, 4)
        self.reference.apply(g, version)
        self.version += 1
        self.applied += 1
        self.env_frames += 4
        expect(reply.outcome == pb.APPLIED, f"outcome {pb.PushOutcome.Name(reply.outcome)}")
        expect(reply.staleness == stale, f"staleness {reply.staleness}, expected {stale}")
        expect(reply.version == self.version, f"version {reply.version}")
        self.expect_params(wire.decode_named(reply.parameters), "stale push")

    def async_dropped_stale(self) -> None:
        bound = self.cfg.paramserver.max_staleness
        if bound == 0:
            raise Skipped("max_staleness = 0: async never drops")
        if self.version <= bound:
            raise Skipped(f"version {self.version} <= max_staleness {bound}")
        self.expect_dropped_stale(self.version - bound - 1)

    def expect_dropped_stale(self, version: int) -> None:
        reply = self.push("conformance-0", version, self.gradients(), F32, 6)
        self.dropped += 1
        self.env_frames += 6  # the frames of a dropped push still count
        expect(reply.outcome == pb.DROPPED_STALE, f"outcome {pb.PushOutcome.Name(reply.outcome)}")
        expect(reply.version == self.version, f"version {reply.version}, not {self.version}")
        expect(reply.staleness == self.version - version, f"staleness {reply.staleness}")
        expect(reply.env_frames == self.env_frames, f"env_frames {reply.env_frames}")
        self.expect_params(wire.decode_named(reply.parameters), "dropped push")
        self.expect_status()

    # -- sync -------------------------------------------------------------------------------
    def sync_stale(self) -> None:
        self.expect_dropped_stale(self.version - 1)

    def sync_surplus(self) -> None:
        if self.replicas < 2:
            raise Skipped("replicas_to_aggregate = 1: a round never waits")
        grads = [self.gradients() for _ in range(self.replicas)]
        version = self.version
        calls = [lambda: self.push("conformance-0", version, grads[0], F32, 1)] * 2
        calls += [
            lambda i=i: self.push(f"conformance-{i}", version, grads[i], F32, 1)
            for i in range(1, self.replicas)
        ]
        # the first two calls come from one client: one of them joins the round, the other
        # is DROPPED_SURPLUS (same gradients, so which one does not matter)
        replies = parallel(calls, stagger=2)
        outcomes = sorted(pb.PushOutcome.Name(r.outcome) for r in replies[:2])
        expect(outcomes == ["APPLIED", "DROPPED_SURPLUS"], f"outcomes {outcomes}")
        self.reference.apply({n: np.mean([g[n] for g in grads], axis=0) for n in SHAPES}, version)
        self.version += 1
        self.applied += self.replicas
        self.dropped += 1
        self.env_frames += self.replicas + 1
        for r in replies:
            expect(r.version == self.version, f"version {r.version}, expected {self.version}")
            self.expect_params(wire.decode_named(r.parameters), "surplus round")
        self.expect_status()

    def _timeout(self) -> float:
        timeout = self.cfg.paramserver.sync_timeout
        if self.replicas < 2:
            raise Skipped("replicas_to_aggregate = 1: a round never waits")
        if timeout > 20:
            raise Skipped(f"sync_timeout = {timeout}s: too long to wait for")
        return timeout

    def _lone_push(self) -> tuple[pb.PushPullResponse, float]:
        version, g = self.version, self.gradients()
        start = time.monotonic()
        reply = self.push("conformance-0", version, g, F32, 1, timeout=self._timeout() + 30)
        elapsed = time.monotonic() - start
        self.reference.apply(g, version)
        self.version += 1
        self.applied += 1
        self.env_frames += 1
        expect(reply.outcome == pb.APPLIED, f"outcome {pb.PushOutcome.Name(reply.outcome)}")
        expect(reply.version == self.version, f"version {reply.version}")
        self.expect_params(wire.decode_named(reply.parameters), "lone push")
        return reply, elapsed

    def sync_timeout(self) -> None:
        """Other learners are live (they pushed the rounds before): a lone push waits for
        sync_timeout, then the round is applied with what arrived."""
        timeout = self._timeout()
        _, elapsed = self._lone_push()
        expect(elapsed >= 0.9 * timeout, f"answered after {elapsed:.2f}s < sync_timeout {timeout}s")

    def sync_not_waited(self) -> None:
        """The learners that missed the timed-out round are not waited for until they call."""
        timeout = self._timeout()
        _, elapsed = self._lone_push()
        expect(elapsed < 0.5 * timeout, f"waited {elapsed:.2f}s for learners that missed a round")

    def sync_rejoins(self) -> None:
        """A learner that calls again is waited for again."""
        self._timeout()
        for i in range(1, self.replicas):
            self.register_call(f"conformance-{i}", pb.LEARNER)()
        self.round([self.gradients() for _ in range(self.replicas)], F32, frames=1)
        done = threading.Event()
        version, g0 = self.version, self.gradients()
        lone = threading.Thread(
            target=lambda: (self.push("conformance-0", version, g0, F32, 0), done.set())
        )
        lone.start()
        # still waiting a quarter of sync_timeout later (the rest must come before the end)
        waited = not done.wait(self._timeout() / 4)
        rest = [self.gradients() for _ in range(1, self.replicas)]
        replies = parallel(
            [
                lambda i=i: self.push(f"conformance-{i}", version, rest[i - 1], F32, 0)
                for i in range(1, self.replicas)
            ]
        )
        lone.join(60)
        outcomes = [pb.PushOutcome.Name(r.outcome) for r in replies]
        expect(all(o == "APPLIED" for o in outcomes), f"outcomes {outcomes}")
        self.reference.apply(
            {n: np.mean([g[n] for g in [g0, *rest]], axis=0) for n in SHAPES}, version
        )
        self.version += 1
        self.applied += self.replicas
        expect(waited, "the round did not wait for the learners that registered again")
        self.expect_params(self.pulled(), "rejoined round")


def parallel(calls: list[Callable[[], object]], stagger: int = 0) -> list:
    """Runs `calls` in threads; returns their results in order (raises the first error).
    The first `stagger` calls start 0.3 s apart, the rest after them: a black-box client
    cannot see when a push has joined a round, so this gives it time to get there."""
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for i, t in enumerate(threads):
        t.start()
        if i < stagger:
            time.sleep(0.3)  # lets the call reach the server before the next starts
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise Failed("a push did not return within 120s")
    return results


def run(target: Target, suite: Suite) -> None:
    ParamServerChecks(target, suite).run()
