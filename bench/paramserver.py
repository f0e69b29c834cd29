"""PushPull latency of the parameter server next to a raw gRPC round trip of the same bytes.

    .venv/bin/python -m bench.paramserver [--shards 1 2 4] [--repeats 5] [--steps 20]

The model is the Nature CNN (conv 8x8x4x32, 4x4x32x64, 3x3x64x64, fc 3136x512, policy
512x4, value 512x1, biases: 1.69M float32 parameters), split over K shards (the fc kernel
cut into K pieces, as --fc_splits K does). For each K it starts K real `ba3c paramserver`
processes (async, Adam) and K "echo" processes: gRPC servers built the same way
(ba3c.rpc.make_server, token check included, the shard's malloc settings) whose one
method answers a request with a reply of the requested size and does nothing else. One
step sends every shard its bytes in parallel and waits for all replies, like the learner
does. Variants:

  raw        echo servers: request = the PushPullRequest's bytes, reply = as many bytes as
             the PushPullResponse; no protobuf, no numpy on either side
  server     the shards, with the same pre-serialised request bytes and the reply left as
             bytes: the difference to `raw` is what the shard adds (parse, validate, Adam,
             reply assembly)
  stub       the shards through the generated stub, as services/learner/shards.py calls
             them today: encode the gradients into messages, serialise, parse the reply
             with protobuf, decode the parameters
  codec      the shards through ba3c/tensors.py's zero-copy path, as the paramserver
             client should call them: the gradients written into one preallocated buffer
             (tensors.Packer), the reply parsed by tensors.parse and decoded with
             np.frombuffer over the received bytes (tensors.decode_named)

each in three wire modes: float32 both ways, bfloat16 gradients with float32 parameters
back, and bfloat16 both ways (PushPullRequest.parameters_dtype = BFLOAT16). Per
variant: `repeats` rounds of `steps` timed steps (after warm-up), rounds interleaved across
variants so that background load hits them alike; we report the median, min and max of
the per-round medians and the ratio of medians to `raw` in the same run, and the CPU time
the servers used per step (from /proc/PID/schedstat: unlike latency, it does not depend on
what else the machine is running). Prints a Markdown table and writes
bench/results/paramserver.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from ba3c import config as configuration
from ba3c import rpc, tensors
from ba3c.rundir import RunDir
from ba3c.sharding import Assignment
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc
from ba3c.v1 import tensor_pb2
from bench.common import ROOT, process_cpu_seconds, stop_process_groups
from tests.support.models import NATURE_CNN

ECHO_METHOD = "/bench.Echo/Echo"
RESULTS = ROOT / "bench" / "results" / "paramserver.json"


# ---------------------------------------------------------------------------------------
# The echo server (run as a separate process: bench/paramserver.py --echo RUN_DIR INDEX)


def serve_echo(run_dir: Path, index: int) -> None:
    from services.paramserver import memory

    memory.reuse_large_buffers()  # as the shard does, so that both allocate alike
    replies: dict[int, bytes] = {}

    def echo(request: bytes, _context) -> bytes:
        (size,) = struct.unpack_from("<Q", request)
        if size not in replies:
            replies[size] = os.urandom(size)
        return replies[size]

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
        },
    )
    rd = RunDir(run_dir)
    server = rpc.make_server(rd.read_secret(), lambda s: s.add_generic_rpc_handlers((handler,)))
    rd.write_address("echo", index, server.address)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


# ---------------------------------------------------------------------------------------
# Processes


class Servers:
    """K shard processes and K echo processes for one run directory."""

    def __init__(self, run_dir: RunDir, shards: int):
        self.run_dir = run_dir
        self.procs: list[subprocess.Popen] = []
        log = open(run_dir.path / "servers.out", "ab")  # noqa: SIM115
        for k in range(shards):
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "ba3c.cli",
                        "paramserver",
                        "--run-dir",
                        str(run_dir.path),
                        "--index",
                        str(k),
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.paramserver",
                        "--echo",
                        str(run_dir.path),
                        str(k),
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        for k in range(shards):
            run_dir.wait_for_address("paramserver", k, timeout=60)
            run_dir.wait_for_address("echo", k, timeout=60)

    def cpu_seconds(self, kind: str) -> float:
        """CPU time used so far by the shard ("ps") or echo ("echo") processes, from
        /proc/PID/schedstat (nanoseconds on a CPU; independent of other load)."""
        procs = self.procs[0::2] if kind == "ps" else self.procs[1::2]
        return sum(process_cpu_seconds(p.pid) for p in procs)

    def stop(self) -> None:
        stop_process_groups(self.procs, grace=20)


# ---------------------------------------------------------------------------------------
# Measuring


def model(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    params = {n: (0.05 * rng.standard_normal(s)).astype(np.float32) for n, s in NATURE_CNN}
    grads = {n: (0.01 * rng.standard_normal(s)).astype(np.float32) for n, s in NATURE_CNN}
    return params, grads


# wire mode -> (gradients' dtype, the parameters_dtype asked for)
WIRES = {
    "float32": ("float32", tensor_pb2.FLOAT32),
    "bfloat16": ("bfloat16", tensor_pb2.FLOAT32),
    "bfloat16-both": ("bfloat16", tensor_pb2.BFLOAT16),
}


class Setup:
    """Channels, stubs and pre-built requests for K shards."""

    def __init__(self, run_dir: RunDir, shards: int):
        token = run_dir.read_secret()
        self.shards = shards
        assignment = Assignment(NATURE_CNN, shards, splits={"fc/kernel": shards})
        params, grads = model()
        self.param_pieces = assignment.split(params)
        self.grad_pieces = assignment.split(grads)
        self.ps_channels = [
            rpc.make_channel(run_dir.read_address("paramserver", k), token) for k in range(shards)
        ]
        self.echo_channels = [
            rpc.make_channel(run_dir.read_address("echo", k), token, retry_services=())
            for k in range(shards)
        ]
        self.stubs = [pb_grpc.ParameterServerStub(c) for c in self.ps_channels]
        for k, stub in enumerate(self.stubs):
            stub.Initialize(
                pb.InitializeRequest(
                    client_id="bench", parameters=tensors.encode_named(self.param_pieces[k])
                ),
                timeout=60,
            )
        identity = dict(request_serializer=None, response_deserializer=None)
        self.raw_pushpull = [
            c.unary_unary("/ba3c.v1.ParameterServer/PushPull", **identity) for c in self.ps_channels
        ]
        self.echo = [c.unary_unary(ECHO_METHOD, **identity) for c in self.echo_channels]
        self.pool = futures.ThreadPoolExecutor(max(1, shards))
        self.packers = {
            dtype: [
                tensors.Packer({n: a.shape for n, a in self.grad_pieces[k].items()}, dtype)
                for k in range(shards)
            ]
            for dtype in ("float32", "bfloat16")
        }
        self.requests = {}
        self.reply_sizes = {}
        for dtype in WIRES:
            reqs = [self.request(k, dtype).SerializeToString() for k in range(shards)]
            self.requests[dtype] = reqs
            # the real reply size, measured once
            self.reply_sizes[dtype] = [
                len(self.raw_pushpull[k](reqs[k], timeout=60)) for k in range(shards)
            ]

    def request(self, k: int, wire: str) -> pb.PushPullRequest:
        grad_dtype, params_dtype = WIRES[wire]
        return pb.PushPullRequest(
            client_id="bench",
            version=0,
            env_frames=0,
            gradients=tensors.encode_named(self.grad_pieces[k], grad_dtype),
            parameters_dtype=params_dtype,
        )

    def step(self, variant: str, dtype: str) -> float:
        start = time.perf_counter()
        if variant == "raw":
            calls = [
                self.echo[k].future(
                    struct.pack("<Q", self.reply_sizes[dtype][k]) + self.requests[dtype][k],
                    timeout=60,
                )
                for k in range(self.shards)
            ]
            for c in calls:
                c.result()
        elif variant == "server":
            calls = [
                self.raw_pushpull[k].future(self.requests[dtype][k], timeout=60)
                for k in range(self.shards)
            ]
            for c in calls:
                c.result()
        elif variant == "codec":
            list(self.pool.map(lambda k: self.codec_push(k, dtype), range(self.shards)))
        else:

            def one(k: int) -> dict:
                reply = self.stubs[k].PushPull(self.request(k, dtype), timeout=60)
                return tensors.decode_named(reply.parameters)

            list(self.pool.map(one, range(self.shards)))
        return time.perf_counter() - start

    def codec_push(self, k: int, wire: str) -> dict[str, np.ndarray]:
        """One PushPull to shard k the zero-copy way (see the module docstring)."""
        grad_dtype, params_dtype = WIRES[wire]
        head = pb.PushPullRequest(
            client_id="bench", version=0, env_frames=0, parameters_dtype=params_dtype
        )
        data = self.packers[grad_dtype][k].serialize(head, self.grad_pieces[k])
        reply, raw = tensors.parse(self.raw_pushpull[k](data, timeout=60), pb.PushPullResponse)
        return tensors.decode_named(raw)

    def close(self) -> None:
        self.pool.shutdown()
        for c in self.ps_channels + self.echo_channels:
            c.close()


VARIANTS = [(variant, wire) for wire in WIRES for variant in ("raw", "server", "stub", "codec")]


def measure(
    setup: Setup, servers: Servers, repeats: int, steps: int, warmup: int
) -> tuple[dict, dict]:
    """Per variant: the median step time of each round, and the servers' CPU seconds per
    step in each round."""
    per_round: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    client: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    for variant in VARIANTS:
        for _ in range(warmup):
            setup.step(*variant)
    for _ in range(repeats):
        for variant in VARIANTS:
            kind = "echo" if variant[0] == "raw" else "ps"
            before, mine = servers.cpu_seconds(kind), time.process_time()
            samples = [setup.step(*variant) for _ in range(steps)]
            cpu[variant].append((servers.cpu_seconds(kind) - before) / steps)
            client[variant].append((time.process_time() - mine) / steps)
            per_round[variant].append(statistics.median(samples))
    return per_round, cpu, client


def summarise(shards: int, setup: Setup, per_round: dict, cpu: dict, client: dict) -> list[dict]:
    rows = []
    for (variant, dtype), medians in per_round.items():
        raw = statistics.median(per_round[("raw", dtype)])
        median = statistics.median(medians)
        rows.append(
            {
                "shards": shards,
                "variant": variant,
                "wire": dtype,
                "request_mb": round(sum(len(r) for r in setup.requests[dtype]) / 1e6, 2),
                "reply_mb": round(sum(setup.reply_sizes[dtype]) / 1e6, 2),
                "median_ms": round(1e3 * median, 2),
                "min_ms": round(1e3 * min(medians), 2),
                "max_ms": round(1e3 * max(medians), 2),
                "ratio_to_raw": round(median / raw, 3),
                "server_cpu_ms": round(1e3 * statistics.median(cpu[(variant, dtype)]), 2),
                "client_cpu_ms": round(1e3 * statistics.median(client[(variant, dtype)]), 2),
            }
        )
    return rows


def breakdown(repeats: int = 15) -> dict[str, float]:
    """CPU milliseconds (this thread) of each step of one PushPull on a 1-shard Nature CNN,
    measured in-process: where the shard's time goes, independent of the network."""
    from services.paramserver.optimizers import Hyper, Optimizer
    from services.paramserver.servicer import parse_push_request
    from services.paramserver.shard import check_gradients

    params, grads = model()
    specs = {n: a.shape for n, a in params.items()}
    out: dict[str, float] = {}

    def cpu_ms(name: str, fn) -> None:
        samples = []
        for _ in range(repeats):
            start = time.thread_time()
            fn()
            samples.append(time.thread_time() - start)
        out[name] = round(1e3 * statistics.median(samples), 2)

    for dtype in ("float32", "bfloat16"):
        data = pb.PushPullRequest(
            client_id="b", version=0, gradients=tensors.encode_named(grads, dtype)
        ).SerializeToString()
        request = parse_push_request(data)
        cpu_ms(f"parse request ({dtype})", lambda d=data: parse_push_request(d))
        cpu_ms(
            f"validate gradients ({dtype})", lambda r=request: check_gradients(specs, r.gradients)
        )
    checked = check_gradients(
        specs,
        parse_push_request(
            pb.PushPullRequest(gradients=tensors.encode_named(grads)).SerializeToString()
        ).gradients,
    )
    for name in ("adam", "rmsprop", "sgd"):
        optimizer = Optimizer(Hyper(optimizer=name), specs)
        cpu_ms(f"apply {name}", lambda o=optimizer: o.apply(params, checked, 1e-6))
    cpu_ms(
        "build reply",
        lambda: tensors.serialize(
            pb.PushPullResponse(outcome=1, version=1), tensors.named_tensors_field(3, params)
        ),
    )
    return out


def table(rows: list[dict]) -> str:
    head = (
        "| shards | variant | wire | request MB | reply MB | median ms | min ms | max ms "
        "| x raw | server CPU ms/step | caller CPU ms/step |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['shards']} | {r['variant']} | {r['wire']} | "
            f"{r['request_mb']} | {r['reply_mb']} | {r['median_ms']} | {r['min_ms']} | "
            f"{r['max_ms']} | {r['ratio_to_raw']} | {r['server_cpu_ms']} | "
            f"{r['client_cpu_ms']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--echo", nargs=2, metavar=("RUN_DIR", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        serve_echo(Path(args.echo[0]), int(args.echo[1]))
        return 0

    rows: list[dict] = []
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    for shards in args.shards:
        with tempfile.TemporaryDirectory(prefix="ba3c-bench-ps-") as tmp:
            cfg = configuration.Config()
            cfg.net.metrics = False
            cfg.paramserver.save_every = 0
            run_dir = RunDir(Path(tmp) / "run")
            run_dir.create(cfg)
            servers = Servers(run_dir, shards)
            try:
                setup = Setup(run_dir, shards)
                per_round, cpu, client = measure(
                    setup, servers, args.repeats, args.steps, args.warmup
                )
                setup.close()
            finally:
                servers.stop()
            new = summarise(shards, setup, per_round, cpu, client)
            rows += new
            print(table(new), flush=True)
    parts = breakdown()
    print("\nCPU ms per PushPull step on the shard, 1 shard, in-process:")
    for name, ms in parts.items():
        print(f"  {name:<32} {ms:>7}")
    report = {
        "benchmark": "paramserver PushPull vs raw gRPC, Nature CNN 1.69M parameters",
        "command": "python -m bench.paramserver " + " ".join(sys.argv[1:]),
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "parameters": int(sum(np.prod(s) for _, s in NATURE_CNN)),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "numpy": np.__version__,
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "seconds": round(time.time() - started, 1),
        "rows": rows,
        "shard_cpu_ms_breakdown": parts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + table(rows))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
