"""Push cost: a shard's CPU per push next to what gRPC and the update alone cost.

    .venv/bin/python bench/pushcost.py [--models nature tensorpack] [--optimizers adam
        rmsprop sgd] [--grad_dtype float32|bfloat16] [--pushes 30] [--repeats 3]

Models (the shard's share of the parameters, as bench/capacity.py builds them):
  nature      the Nature CNN on one shard, 1,686,693 parameters
  tensorpack  shard 0 of the seed's network (fc 512) split 4 ways, 856,064 parameters
  seed        shard 0 of the seed's best run's network (fc 128) split 4 ways, 241,664
              parameters (not in the default set: the targets are for the two above)

For each model and optimizer, one real `ba3c paramserver` (async, that optimizer, no
checkpoints) and one echo server (bench/paramserver.py's: same gRPC server, token check
included, answers a request with a reply of the requested size and does nothing else).
One caller sends `pushes` pre-serialised PushPulls one after the other to the shard, then
the same bytes to the echo server (asking for a reply as long as the shard's); per repeat
we read each server's CPU time (/proc/PID/task/*/schedstat) per call. In this process,
the compiled optimizer pass alone (`Optimizer.apply` on the same shapes and gradients,
CPU time, median of `pushes`). Per row:

  ratio = shard CPU per push / (echo CPU per call + compiled update)

what the shard adds beyond moving the bytes and doing the arithmetic: parsing, checking,
Python and gRPC per-call work, building the reply. **Target: <= 1.3.** Writes
bench/results/pushcost.json.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ba3c import config as configuration
from ba3c import rpc, tensors
from ba3c.rundir import RunDir
from ba3c.v1 import paramserver_pb2 as pb
from bench.capacity import shard_variables
from bench.common import RESULTS, fmt, machine, markdown, spread, write_report
from bench.paramserver import ECHO_METHOD, Servers

MODELS = {  # name -> (bench/capacity.py model, fc_neurons, shards the model is split into)
    "nature": ("nature", 512, 1),
    "tensorpack": ("tensorpack", 512, 4),
    "seed": ("tensorpack", 128, 4),
}
DEFAULT_MODELS = ["nature", "tensorpack"]
TARGET = 1.3
PUSHPULL = "/ba3c.v1.ParameterServer/PushPull"


def arrays(variables: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: (0.01 * rng.standard_normal(s)).astype(np.float32) for n, s in variables.items()}


def update_cpu_ms(optimizer: str, variables: dict, grads: dict, dtype: str, pushes: int) -> dict:
    """The compiled update alone, as the shard runs it (its thread count, the gradients in
    their wire form), CPU ms per call."""
    from services.paramserver.optimizers import Hyper, Optimizer
    from services.paramserver.shard import optimizer_threads

    params = arrays(variables, 1)
    specs = {n: tuple(s) for n, s in variables.items()}
    opt = Optimizer(Hyper(optimizer=optimizer), specs, optimizer_threads())
    wire = {n: tensors.to_bfloat16_bits(g) if dtype == "bfloat16" else g for n, g in grads.items()}
    samples = []
    for _ in range(pushes):
        start = time.process_time()
        opt.apply(params, wire, 1e-6)
        samples.append(time.process_time() - start)
    return spread([1e3 * s for s in samples])


def measure(model: str, optimizer: str, args, workdir: Path) -> dict:
    name, fc_neurons, of_shards = MODELS[model]
    variables = shard_variables(name, fc_neurons, of_shards)
    parameters = int(sum(np.prod(s) for s in variables.values()))
    cfg = configuration.Config()
    cfg.net.metrics = False
    cfg.paramserver.save_every = 0
    cfg.optim.optimizer = optimizer
    cfg.optim.lr = 1e-6
    run_dir = RunDir(workdir / f"run-{model}-{optimizer}")
    run_dir.create(cfg)
    servers = Servers(run_dir, 1)
    try:
        token = run_dir.read_secret()
        ps = rpc.make_channel(run_dir.read_address("paramserver", 0), token)
        echo = rpc.make_channel(run_dir.read_address("echo", 0), token, retry_services=())
        raw = dict(request_serializer=None, response_deserializer=None)
        push, call_echo = ps.unary_unary(PUSHPULL, **raw), echo.unary_unary(ECHO_METHOD, **raw)
        initialize = ps.unary_unary("/ba3c.v1.ParameterServer/Initialize", **raw)
        initialize(
            pb.InitializeRequest(
                client_id="bench", parameters=tensors.encode_named(arrays(variables, 1))
            ).SerializeToString(),
            timeout=60,
        )
        grads = arrays(variables, 2)
        packer = tensors.Packer({n: tuple(s) for n, s in variables.items()}, args.grad_dtype)
        request = packer.serialize(pb.PushPullRequest(client_id="bench", version=0), grads)
        reply_size = len(push(request, timeout=60))
        echo_request = struct.pack("<Q", reply_size) + request
        for _ in range(3):  # warm-up: both servers' first calls
            push(request, timeout=60)
            call_echo(echo_request, timeout=60)
        shard_ms, echo_ms = [], []
        for _ in range(args.repeats):
            for kind, call, body, out in (
                ("ps", push, request, shard_ms),
                ("echo", call_echo, echo_request, echo_ms),
            ):
                before = servers.cpu_seconds(kind)
                for _ in range(args.pushes):
                    call(body, timeout=60)
                out.append(1e3 * (servers.cpu_seconds(kind) - before) / args.pushes)
        ps.close()
        echo.close()
    finally:
        servers.stop()
    update = update_cpu_ms(optimizer, variables, grads, args.grad_dtype, args.pushes)
    ratios = [s / (e + update["median"]) for s, e in zip(shard_ms, echo_ms, strict=True)]
    return {
        "model": model,
        "parameters": parameters,
        "optimizer": optimizer,
        "grad_dtype": args.grad_dtype,
        "request_mb": round(len(request) / 1e6, 2),
        "reply_mb": round(reply_size / 1e6, 2),
        "shard_cpu_ms": spread(shard_ms),
        "echo_cpu_ms": spread(echo_ms),
        "update_cpu_ms": update,
        "ratio": spread(ratios),
    }


def table(rows: list[dict]) -> str:
    return markdown(
        [
            "model",
            "parameters",
            "optimizer",
            "grads",
            "request / reply MB",
            "shard CPU ms/push",
            "echo CPU ms/call",
            "compiled update ms",
            "shard / (echo + update)",
        ],
        [
            [
                r["model"],
                f"{r['parameters']:,}",
                r["optimizer"],
                r["grad_dtype"],
                f"{r['request_mb']} / {r['reply_mb']}",
                fmt(r["shard_cpu_ms"], 2),
                fmt(r["echo_cpu_ms"], 2),
                fmt(r["update_cpu_ms"], 2),
                fmt(r["ratio"], 2),
            ]
            for r in rows
        ],
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=DEFAULT_MODELS)
    parser.add_argument(
        "--optimizers",
        nargs="+",
        choices=["adam", "rmsprop", "sgd"],
        default=["adam", "rmsprop", "sgd"],
    )
    parser.add_argument("--grad_dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--pushes", type=int, default=30, help="Calls per repeat.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "pushcost.json")
    args = parser.parse_args(argv)
    started, before = time.time(), machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ba3c-bench-pushcost-") as tmp:
        for model in args.models:
            for optimizer in args.optimizers:
                rows.append(measure(model, optimizer, args, Path(tmp)))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\nmedian [min-max] of {args.repeats} repeats of {args.pushes} calls\n")
    print(table(rows))
    report = {
        "benchmark": "shard CPU per push vs raw gRPC echo + compiled update",
        "command": "python -m bench.pushcost " + " ".join(sys.argv[1:] if argv is None else argv),
        "target": TARGET,
        "pushes": args.pushes,
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
