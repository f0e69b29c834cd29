"""Paramserver capacity: N synthetic learners pushing as fast as they can against one shard.

    .venv/bin/python -m bench.capacity [--learners 1 2 4 8 16] [--modes async sync]
        [--seconds 3] [--repeats 3] [--warmup 1] [--model nature|tensorpack|tiny]
        [--fc_neurons 512] [--of_shards 1] [--grad_dtype float32|bfloat16]

One real `ba3c paramserver` process (Adam, no checkpoints during the run) holds shard 0 of
the model split `--of_shards` ways (the fc kernel cut as --fc_splits does). N synthetic
learners are separate processes (this file with --learner): each registers as a LEARNER,
builds its PushPull request once (random gradients, pre-serialised) and then pushes in a
loop, sending the version of the parameters the previous reply carried (so sync mode
accepts the push) and reading only the reply's header. The learner processes are started
once per mode and reused for every N; each N gets a fresh shard (sync mode needs
replicas_to_aggregate = N).

Per (mode, N), after `--warmup` seconds the run is cut into `--repeats` windows of
`--seconds`; per window:
  applied/s       pushes the shard applied (Status.pushes_applied), per second
  versions/s      optimizer updates (Status.version); in sync mode one per N pushes
  p50/p99 ms      PushPull latency seen by the learners (calls that ended in the window)
  shard CPU ms    CPU time of the shard process (all threads) per applied push; unlike
                  latency it hardly depends on the machine's load, so 1000 / it is the
                  pushes/s one dedicated core could apply
  network         bytes in + out per push (request and reply, as serialised) times the
                  applied pushes/s; and at the 1-core capacity, in Gb/s: the link a shard
                  with its own core would need
We print the median [min-max] over the windows; the machine's cores and load average are
recorded. Writes bench/results/capacity.json. --model tiny is for tests (a few KB).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from ba3c import rpc, tensors
from ba3c.rundir import RunDir
from ba3c.sharding import Assignment
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc
from bench.common import (
    RESULTS,
    ROOT,
    fmt,
    machine,
    markdown,
    percentile,
    process_cpu_seconds,
    spread,
    stop_process_groups,
    write_report,
)
from tests.support import ba3c_command, make_run_dir
from tests.support.models import NATURE_CNN

PUSHPULL = "/ba3c.v1.ParameterServer/PushPull"
TINY = [("fc/kernel", (32, 16)), ("fc/bias", (16,)), ("value/kernel", (16, 1))]


def tensorpack_variables(
    fc_neurons: int, frame_size: int = 84, channels: int = 4, actions: int = 4
) -> list[tuple[str, tuple[int, ...]]]:
    """The seed's CNN (ba3c/models.py `tensorpack`): 4 SAME convs, 2x2 pools after the
    first three, fc `fc_neurons`. Computed here so that no process needs TensorFlow."""
    variables, c, side = [], channels, frame_size
    for i, (filters, size) in enumerate([(32, 5), (32, 5), (64, 4), (64, 3)]):
        variables += [(f"conv{i}/kernel", (size, size, c, filters)), (f"conv{i}/bias", (filters,))]
        c = filters
        if i < 3:
            side //= 2
    variables += [
        ("fc/kernel", (side * side * c, fc_neurons)),
        ("fc/bias", (fc_neurons,)),
        ("policy/kernel", (fc_neurons, actions)),
        ("policy/bias", (actions,)),
        ("value/kernel", (fc_neurons, 1)),
        ("value/bias", (1,)),
    ]
    return variables


def shard_variables(model: str, fc_neurons: int, of_shards: int) -> dict[str, list[int]]:
    """{piece name: shape} of shard 0 when the model is split `of_shards` ways."""
    variables = {
        "nature": NATURE_CNN,
        "tiny": TINY,
        "tensorpack": tensorpack_variables(fc_neurons),
    }[model]
    assignment = Assignment(variables, of_shards, splits={"fc/kernel": of_shards})
    zeros = {n: np.zeros(s, np.float32) for n, s in variables}
    return {name: list(a.shape) for name, a in assignment.split(zeros)[0].items()}


# ---------------------------------------------------------------------------------------
# The synthetic learner (a separate process: bench/capacity.py --learner SPEC INDEX)


def reply_header(reply: bytes) -> tuple[int, int]:
    """(outcome, version) from a serialised PushPullResponse without parsing the
    parameters: the scalar fields come first (tensors.serialize in the shard's reply)."""
    values, pos = {}, 0
    while pos < len(reply) and len(values) < 2:
        key, pos = _varint(reply, pos)
        if key & 7 != 0:  # reached a length-delimited field: the parameters
            break
        values[key >> 3], pos = _varint(reply, pos)
    if 1 in values and 2 in values:
        return values[1], values[2]
    parsed = pb.PushPullResponse.FromString(reply)
    return parsed.outcome, parsed.version


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def learner(spec_path: Path, index: int) -> int:
    """Waits for rounds on stdin (JSON: run_dir, end, out); pushes in a loop until
    `end` (time.monotonic, which all processes share) and writes one record per call."""
    spec = json.loads(spec_path.read_text())
    rng = np.random.default_rng(index)
    grads = {
        n: (0.01 * rng.standard_normal(s)).astype(np.float32) for n, s in spec["variables"].items()
    }
    body = pb.PushPullRequest(
        gradients=tensors.encode_named(grads, spec["grad_dtype"])
    ).SerializeToString()
    client_id = f"learner-{index}"
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        run_dir = RunDir(job["run_dir"])
        records = []
        with rpc.make_channel(
            run_dir.read_address("paramserver", 0), run_dir.read_secret()
        ) as channel:
            version = (
                pb_grpc.ParameterServerStub(channel)
                .Register(pb.RegisterRequest(client_id=client_id, role=pb.LEARNER), timeout=60)
                .version
            )
            push = channel.unary_unary(
                PUSHPULL, request_serializer=None, response_deserializer=None
            )
            while (started := time.monotonic()) < job["end"]:
                head = pb.PushPullRequest(
                    client_id=client_id, version=version, samples=32, env_frames=32
                ).SerializeToString()
                try:
                    reply = push(head + body, timeout=job["end"] - started + 2.0)
                except grpc.RpcError as error:
                    if time.monotonic() >= job["end"]:
                        break  # the last call of a sync round that will never fill
                    records.append([started, time.monotonic(), -int(error.code().value[0])])
                    continue
                outcome, version = reply_header(reply)
                records.append([started, time.monotonic(), outcome])
        Path(job["out"]).write_text(json.dumps(records))
        print("done", flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# The driver


class Learners:
    """`count` synthetic learner processes, reused across rounds."""

    def __init__(self, spec_path: Path, count: int, log_path: Path):
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.capacity", "--learner", str(spec_path), str(i)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
            for i in range(count)
        ]
        for i in range(count):
            self._expect(i, "ready")

    def _expect(self, i: int, word: str) -> None:
        line = self.procs[i].stdout.readline().strip()
        if line != word:
            raise RuntimeError(
                f"synthetic learner {i} said {line!r} instead of {word!r}; "
                f"the learners' stderr ends with:\n{tail(self.log_path)}"
            )

    def run(self, n: int, job: dict, out_dir: Path) -> list[list]:
        """Runs learners 0..n-1 for one round; returns all their call records."""
        outs = [out_dir / f"records-{i}.json" for i in range(n)]
        for i in range(n):
            self.procs[i].stdin.write(json.dumps({**job, "out": str(outs[i])}) + "\n")
            self.procs[i].stdin.flush()
        for i in range(n):
            self._expect(i, "done")
        return [r for path in outs for r in json.loads(path.read_text())]

    def stop(self) -> None:
        stop_process_groups(self.procs, grace=10)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


def sample(stub, pid: int) -> tuple[float, float, int, int]:
    """(time, shard CPU seconds, pushes applied, version) now."""
    now = time.monotonic()
    status = stub.Status(pb.StatusRequest(), timeout=30)
    return now, process_cpu_seconds(pid), status.pushes_applied, status.version


def measure(mode: str, n: int, learners: Learners, variables: dict, args, workdir: Path) -> dict:
    """One fresh shard, n learners, `repeats` windows; one result row."""
    run_dir = make_run_dir(
        workdir / f"run-{mode}-{n}",
        use_sync=mode == "sync",
        replicas_to_aggregate=n,
        metrics=False,
        save_every=0,
        lr=1e-4,
    )
    log_path = workdir / f"paramserver-{mode}-{n}.out"
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            ba3c_command("paramserver", "--run-dir", str(run_dir.path)),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        address = run_dir.wait_for_address("paramserver", 0, timeout=120)
        with rpc.make_channel(address, run_dir.read_secret()) as channel:
            stub = pb_grpc.ParameterServerStub(channel)
            rng = np.random.default_rng(0)
            stub.Initialize(
                pb.InitializeRequest(
                    client_id="bench",
                    parameters=tensors.encode_named(
                        {
                            k: (0.05 * rng.standard_normal(s)).astype(np.float32)
                            for k, s in variables.items()
                        }
                    ),
                ),
                timeout=60,
            )
            first = time.monotonic() + 0.5 + 0.05 * n  # time for every learner to read its job
            bounds = [first + args.warmup + i * args.seconds for i in range(args.repeats + 1)]
            job = {"run_dir": str(run_dir.path), "end": bounds[-1] + 0.01}
            samples = []
            with _background(lambda: learners.run(n, job, workdir)) as records:
                for t in bounds:
                    time.sleep(max(0.0, t - time.monotonic()))  # a measuring window's edge
                    samples.append(sample(stub, server.pid))
    except Exception:
        print(f"the paramserver's output ends with:\n{tail(log_path)}", file=sys.stderr)
        raise
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return summarise(mode, n, samples, records.result())


class _background:
    """Runs fn in a thread for the duration of a with-block; .result() afterwards."""

    def __init__(self, fn):
        self._pool = futures.ThreadPoolExecutor(1)
        self._future = self._pool.submit(fn)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._pool.shutdown(wait=exc[0] is None)

    def result(self):
        return self._future.result()


def bytes_per_push(variables: dict, grad_dtype: str) -> tuple[int, int]:
    """(request, reply) bytes of one PushPull of this shard, as serialised (small fields
    included, client ids as the synthetic learners send them)."""
    shapes = {n: tuple(s) for n, s in variables.items()}
    zeros = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    head = pb.PushPullRequest(client_id="learner-0", version=1 << 20, samples=32, env_frames=32)
    request = len(tensors.Packer(shapes, grad_dtype).serialize(head, zeros))
    reply = pb.PushPullResponse(outcome=pb.APPLIED, version=1 << 20, env_frames=1 << 30)
    return request, len(tensors.serialize(reply, tensors.named_tensors_field(3, zeros)))


def summarise(mode: str, n: int, samples: list, records: list) -> dict:
    windows = []
    pairs = zip(samples, samples[1:], strict=False)
    for (t0, cpu0, applied0, v0), (t1, cpu1, applied1, v1) in pairs:
        latencies = [
            1e3 * (end - start)
            for start, end, outcome in records
            if t0 <= end < t1 and outcome >= 0
        ]
        applied = applied1 - applied0
        windows.append(
            {
                "applied_per_s": applied / (t1 - t0),
                "versions_per_s": (v1 - v0) / (t1 - t0),
                "pushes_per_version": applied / (v1 - v0) if v1 > v0 else float("nan"),
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "shard_cpu_ms_per_push": 1e3 * (cpu1 - cpu0) / applied if applied else float("nan"),
            }
        )
    t_first, t_last = samples[0][0], samples[-1][0]
    in_run = [r for r in records if t_first <= r[1] < t_last]
    return {
        "mode": mode,
        "learners": n,
        **{key: spread([w[key] for w in windows]) for key in windows[0]},
        "calls": len(in_run),
        "dropped": sum(1 for r in in_run if r[2] > pb.APPLIED),
        "errors": sum(1 for r in in_run if r[2] < 0),
    }


def table(rows: list[dict], push_bytes: int | None = None) -> str:
    """The rows; with `push_bytes` (request + reply) also the network they mean."""
    net = push_bytes is not None

    def network(r: dict) -> list[str]:
        if not net:
            return []
        capacity = 1e3 / r["shard_cpu_ms_per_push"]["median"]
        return [
            f"{r['applied_per_s']['median'] * push_bytes / 1e6:,.0f}",
            f"{capacity * push_bytes * 8 / 1e9:.1f}",
        ]

    return markdown(
        [
            "mode",
            "N",
            "applied pushes/s",
            "versions/s",
            "p50 ms",
            "p99 ms",
            "shard CPU ms/push",
            "1-core capacity pushes/s",
            *(["network MB/s (in+out)", "at 1-core capacity Gb/s"] if net else []),
            "dropped",
            "errors",
        ],
        [
            [
                r["mode"],
                r["learners"],
                fmt(r["applied_per_s"], 1),
                fmt(r["versions_per_s"], 1),
                fmt(r["p50_ms"], 1),
                fmt(r["p99_ms"], 1),
                fmt(r["shard_cpu_ms_per_push"], 2),
                f"{1e3 / r['shard_cpu_ms_per_push']['median']:,.0f}",
                *network(r),
                r["dropped"],
                r["errors"],
            ]
            for r in rows
        ],
    )


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learners", type=positive(int), nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--modes", nargs="+", choices=["async", "sync"], default=["async", "sync"])
    parser.add_argument("--seconds", type=positive(float), default=3.0, help="Per window.")
    parser.add_argument("--repeats", type=positive(int), default=3, help="Windows per N.")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--model", choices=["nature", "tensorpack", "tiny"], default="nature")
    parser.add_argument(
        "--fc_neurons", type=positive(int), default=512, help="fc units of the tensorpack model."
    )
    parser.add_argument(
        "--of_shards",
        type=positive(int),
        default=1,
        help="The shard holds 1 of this many shards of the model.",
    )
    parser.add_argument("--grad_dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", type=Path, default=RESULTS / "capacity.json")
    parser.add_argument("--learner", nargs=2, metavar=("SPEC", "INDEX"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.learner:
        return learner(Path(args.learner[0]), int(args.learner[1]))
    variables = shard_variables(args.model, args.fc_neurons, args.of_shards)
    parameters = int(sum(np.prod(s) for s in variables.values()))
    request_bytes, reply_bytes = bytes_per_push(variables, args.grad_dtype)
    push_bytes = request_bytes + reply_bytes
    started, before = time.time(), machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ba3c-bench-capacity-") as tmp:
        workdir = Path(tmp)
        spec = workdir / "spec.json"
        spec.write_text(json.dumps({"variables": variables, "grad_dtype": args.grad_dtype}))
        for mode in args.modes:
            learners = Learners(spec, max(args.learners), workdir / "learners.err")
            try:
                for n in args.learners:
                    rows.append(measure(mode, n, learners, variables, args, workdir))
                    print(table(rows[-1:], push_bytes).splitlines()[-1], flush=True)
            finally:
                learners.stop()
    print(
        f"\nOne shard holding {parameters:,} parameters ({args.model}, 1 of {args.of_shards} "
        f"shards), {args.grad_dtype} gradients; median [min-max] of {args.repeats} windows "
        f"of {args.seconds:g} s\n"
    )
    print(table(rows, push_bytes))
    report = {
        "benchmark": "paramserver capacity: N synthetic learners against one shard",
        "command": "python -m bench.capacity " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model,
        "of_shards": args.of_shards,
        "fc_neurons": args.fc_neurons,
        "shard_parameters": parameters,
        "grad_dtype": args.grad_dtype,
        "request_bytes": request_bytes,
        "reply_bytes": reply_bytes,
        "seconds_per_window": args.seconds,
        "repeats": args.repeats,
        "machine_before": before,
        "machine_after": machine(),
        "wall_seconds": round(time.time() - started, 1),
        "rows": rows,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
