"""`ba3c conformance evaluator`: the kit serves fake parameter-server shards and checks what
an evaluator does with them.

The kit builds the run's model from config.toml (TensorFlow: this role may import it),
serves one fake shard per `[paramserver] ps` at addresses/paramserver-K and starts them
uninitialized. Start the evaluator under test on the same run directory (ba3c's own:
`ba3c evaluator --run-dir D`), with a short `[evaluator] eval_every` and few
`eval_episodes`. The kit then:
  1. answers Pull with FAILED_PRECONDITION for a while (the evaluator must keep polling),
  2. initializes the shards at version 1 with the model's initial values and waits for an
     evaluation in RUN_DIR/eval.jsonl,
  3. moves the shards to version 2 and waits for the evaluator to pull again with
     have_version 1 and to evaluate version 2.
Throughout, every call must carry the token, Register as EVALUATOR with a client_id, and
nothing may Initialize or PushPull.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import numpy as np

from ba3c import envs, models, rpc
from ba3c.tools.conformance import wire
from ba3c.tools.conformance.suite import Failed, Suite, expect
from ba3c.tools.conformance.target import KIT_MESSAGE_LIMIT, Target
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc
from ba3c.v1 import tensor_pb2

UNINITIALISED_PULLS = 3  # Pulls answered FAILED_PRECONDITION before the kit initializes


class FakeShard(pb_grpc.ParameterServerServicer):
    """One shard whose state the kit sets; records every call."""

    def __init__(self, index: int, token: str, lease_seconds: float):
        self.index = index
        self.token = token
        self.lease_seconds = lease_seconds
        self.lock = threading.Lock()
        self.params: dict[str, np.ndarray] | None = None
        self.version = 0
        self.calls: list[tuple[str, str, dict]] = []  # (method, client_id, details)
        self.problems: dict[str, str] = {}
        self.refused_pulls = 0

    def _enter(self, method: str, client_id: str, context, **details) -> None:
        metadata = dict(context.invocation_metadata())
        with self.lock:
            self.calls.append((method, client_id, details))
        if metadata.get("authorization") != f"Bearer {self.token}":
            self.problems.setdefault("token", f"{method} to shard {self.index} without the token")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong run token")

    def set(self, params: dict[str, np.ndarray], version: int) -> None:
        with self.lock:
            self.params, self.version = params, version

    def Register(self, request, context):
        self._enter("Register", request.client_id, context, role=request.role)
        if not request.client_id or request.role != pb.EVALUATOR:
            self.problems.setdefault(
                "register",
                f"Register(client_id={request.client_id!r}, "
                f"role={pb.ClientRole.Name(request.role)}) to shard {self.index}",
            )
        with self.lock:
            params = self.params
            return pb.RegisterResponse(
                shard_index=self.index,
                mode=pb.ASYNC,
                version=self.version,
                initialized=params is not None,
                variables=[
                    tensor_pb2.VariableSpec(name=n, dtype=tensor_pb2.FLOAT32, shape=a.shape)
                    for n, a in (params or {}).items()
                ],
                lease_seconds=self.lease_seconds,
            )

    def Initialize(self, request, context):
        self._enter("Initialize", request.client_id, context)
        self.problems.setdefault("read_only", f"Initialize on shard {self.index}")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "conformance kit: evaluators never write")

    def PushPull(self, request, context):
        self._enter("PushPull", request.client_id, context)
        self.problems.setdefault("read_only", f"PushPull on shard {self.index}")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "conformance kit: evaluators never write")

    def Pull(self, request, context):
        self._enter("Pull", request.client_id, context, have_version=request.have_version)
        with self.lock:
            if self.params is None:
                self.refused_pulls += 1
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not initialized yet")
            if request.have_version == self.version:
                return pb.PullResponse(version=self.version, unchanged=True, env_frames=7)
            return pb.PullResponse(
                version=self.version, parameters=wire.named(self.params), env_frames=7
            )

    def Status(self, request, context):
        self._enter("Status", "", context)
        with self.lock:
            return pb.StatusResponse(
                shard_index=self.index,
                mode=pb.ASYNC,
                initialized=self.params is not None,
                version=self.version,
                env_frames=7,
                checkpoint_version=-1,
            )

    def pulls(self, have_version: int) -> int:
        with self.lock:
            return sum(
                1 for m, _, d in self.calls if m == "Pull" and d["have_version"] == have_version
            )


class EvaluatorChecks:
    def __init__(self, target: Target, suite: Suite):
        self.t = target
        self.suite = suite
        self.shards: list[FakeShard] = []
        self.servers: list[grpc.Server] = []
        self.pieces: list[dict[str, np.ndarray]] = []
        self.jsonl = target.run_dir.path / "eval.jsonl"

    def start(self) -> int:
        cfg = self.t.cfg
        env = envs.describe(cfg)
        model = models.build_model(
            cfg, tuple(env.observation_shape), env.num_actions, np.dtype(env.observation_dtype).name
        )
        layout = models.assignment(cfg, model)
        self.pieces = layout.split(models.get_weights(model))
        host = rpc.bind_host(cfg.net.host)
        for k in range(cfg.paramserver.ps):
            shard = FakeShard(k, self.t.token, cfg.paramserver.lease_seconds)
            server = grpc.server(
                futures.ThreadPoolExecutor(8, thread_name_prefix=f"fake-shard-{k}"),
                options=[
                    ("grpc.max_send_message_length", KIT_MESSAGE_LIMIT),
                    ("grpc.max_receive_message_length", KIT_MESSAGE_LIMIT),
                ],
            )
            pb_grpc.add_ParameterServerServicer_to_server(shard, server)
            port = server.add_insecure_port(f"{host}:0")
            expect(port, f"cannot listen on {host}")
            server.start()
            self.shards.append(shard)
            self.servers.append(server)
            self.t.run_dir.write_address("paramserver", k, f"{host}:{port}")
        return len(self.shards)

    def stop(self) -> None:
        for k, server in enumerate(self.servers):
            self.t.run_dir.remove_address("paramserver", k)
            server.stop(0).wait()

    def _wait(self, condition: Callable[[], object], what: str) -> object:
        deadline = time.monotonic() + self.t.timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        raise Failed(f"timed out after {self.t.timeout:.0f}s waiting for {what}")

    def evaluations(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        lines = self.jsonl.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def waits_for_initialization(self) -> None:
        self._wait(
            lambda: sum(s.refused_pulls for s in self.shards) >= UNINITIALISED_PULLS,
            f"{UNINITIALISED_PULLS} Pulls of uninitialized shards (the evaluator must keep "
            "polling until they are initialized)",
        )

    def evaluates(self, version: int) -> None:
        for shard, pieces in zip(self.shards, self.pieces, strict=True):
            values = pieces if version == 1 else {n: a * 0.5 for n, a in pieces.items()}
            shard.set({n: np.array(a, np.float32) for n, a in values.items()}, version)
        record = self._wait(
            lambda: next((r for r in self.evaluations() if r.get("version") == version), None),
            f"an evaluation of version {version} in {self.jsonl}",
        )
        cfg = self.t.cfg
        expect(
            record.get("versions") == [version] * len(self.shards),
            f"versions {record.get('versions')}",
        )
        expect(
            record.get("episodes") == cfg.evaluator.eval_episodes,
            f"episodes {record.get('episodes')}, eval_episodes {cfg.evaluator.eval_episodes}",
        )
        expect(
            len(record.get("scores", [])) == record.get("episodes"),
            f"{len(record.get('scores', []))} scores for {record.get('episodes')} episodes",
        )
        expect(record.get("env_frames") == 7, f"env_frames {record.get('env_frames')}, not 7")

    def pulls_with_have_version(self) -> None:
        for shard in self.shards:
            expect(shard.pulls(1) > 0, f"shard {shard.index}: no Pull with have_version 1")

    def problems(self, check: str) -> None:
        for shard in self.shards:
            if check in shard.problems:
                raise Failed(shard.problems[check])
        if check == "register":
            registered = [any(m == "Register" for m, _, _ in s.calls) for s in self.shards]
            expect(all(registered), f"Register calls per shard: {registered}")

    def run(self) -> None:
        c = self.suite.check
        if c("address", self.start) is None:
            return
        try:
            c("waits_for_initialization", self.waits_for_initialization)
            c("evaluates", self.evaluates, 1)
            c("follows_versions", self.evaluates, 2)
            c("pull.have_version", self.pulls_with_have_version)
        finally:
            self.stop()
        for check in ("token", "register", "read_only"):
            c(check, self.problems, check)


def run(target: Target, suite: Suite, steps: int = 0) -> None:
    EvaluatorChecks(target, suite).run()
