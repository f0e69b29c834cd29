"""What one Act step costs in gRPC Python alone: a lockstep bidirectional stream of
ActRequest-sized messages (one half of a double-buffered pool: 8 newest frames of 84x84,
56 KB) answered by ActResponse-sized ones, against servers of each kind, nothing else in
the loop.

    .venv/bin/python -m bench.act_transport [--messages 1000] [--repeats 3] [--bytes 56448]

Servers, each in its own process, alternated repeat by repeat:
  sync        grpc.server with a thread pool and a generator handler (the learner today)
  aio         grpc.aio.server, an async generator handler
  aio-rw      grpc.aio.server, context.read() / context.write() (no generators)
  sync-unary  the sync server, one unary call per step (what the stream replaces)
The client is the pool's: a sync stream fed by a queue, one `next()` per step (unary: one
blocking call). Prints the server's and the client's CPU microseconds per step (from /proc
and process_time), and steps/s; medians [min-max]; writes bench/results/act_transport.json.
Seconds; not in `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

from bench.common import RESULTS, ROOT, fmt, machine, process_cpu_seconds, spread, write_report
from tests.support import wait_for

SERVICE, STREAM, UNARY = "bench.Act", "Stream", "Unary"
REPLY = bytes(48)  # an ActResponse of 8 actions, a version and a few flags
MODES = ("sync", "aio", "aio-rw", "sync-unary")


def _echo(_request: bytes, _context) -> bytes:
    return REPLY


def _stream_sync(requests, _context):
    for _ in requests:
        yield REPLY


async def _stream_aio(requests, _context):
    async for _ in requests:
        yield REPLY


async def _stream_aio_rw(_requests, context):
    while (await context.read()) is not grpc.aio.EOF:
        await context.write(REPLY)


def _handler(stream) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            STREAM: grpc.stream_stream_rpc_method_handler(stream),
            UNARY: grpc.unary_unary_rpc_method_handler(_echo),
        },
    )


def serve(mode: str, port_file: Path) -> None:
    """Runs a server of `mode` until killed; writes its port to `port_file`."""
    if mode.startswith("sync"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers((_handler(_stream_sync),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        port_file.write_text(str(port))
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (_handler(_stream_aio_rw if mode == "aio-rw" else _stream_aio),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_file.write_text(str(port))
        await server.wait_for_termination()

    asyncio.run(main())


def measure(mode: str, port: int, server_pid: int, messages: int, size: int) -> dict:
    """Steps/s and CPU us per step of server and client over `messages` lockstep steps."""
    request = os.urandom(size)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        if mode == "sync-unary":
            call = channel.unary_unary(f"/{SERVICE}/{UNARY}")

            def step() -> None:
                call(request)

            close = None
        else:
            requests: queue.SimpleQueue = queue.SimpleQueue()
            responses = channel.stream_stream(f"/{SERVICE}/{STREAM}")(iter(requests.get, None))

            def step() -> None:
                requests.put(request)
                next(responses)

            def close() -> None:
                requests.put(None)
                responses.cancel()

        for _ in range(50):
            step()
        server_cpu, client_cpu, began = (
            process_cpu_seconds(server_pid),
            time.process_time(),
            time.perf_counter(),
        )
        for _ in range(messages):
            step()
        wall = time.perf_counter() - began
        result = {
            "steps_per_s": messages / wall,
            "server_us": (process_cpu_seconds(server_pid) - server_cpu) * 1e6 / messages,
            "client_us": (time.process_time() - client_cpu) * 1e6 / messages,
        }
        if close is not None:
            close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="Steps per measurement.")
    parser.add_argument("--repeats", type=int, default=3, help="Rounds over all servers.")
    parser.add_argument("--bytes", type=int, default=8 * 84 * 84, help="Request size.")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "act_transport.json")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port_file)
        return 0
    for name in ("messages", "repeats", "bytes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="ba3c-act-") as tmp:
        for _ in range(args.repeats):
            for mode in MODES:
                port_file = Path(tmp) / f"{mode}.port"
                port_file.unlink(missing_ok=True)
                server = subprocess.Popen(
                    [sys.executable, "-m", "bench.act_transport", "--serve", mode]
                    + ["--port-file", str(port_file)],
                    cwd=ROOT,
                )
                try:
                    port = wait_for(
                        lambda f=port_file: f.exists() and int(f.read_text() or 0),
                        30,
                        f"the {mode} server's port",
                    )
                    runs[mode].append(measure(mode, port, server.pid, args.messages, args.bytes))
                finally:
                    server.kill()
                    server.wait()

    table = {
        mode: {key: spread([r[key] for r in rs]) for key in rs[0]} for mode, rs in runs.items()
    }
    base = table["sync"]["server_us"]["median"]
    print("| server | server CPU us/step | x sync | client CPU us/step | steps/s |")
    print("| --- | --- | --- | --- | --- |")
    for mode, row in table.items():
        print(
            f"| {mode} | {fmt(row['server_us'])} | {row['server_us']['median'] / base:.2f} "
            f"| {fmt(row['client_us'])} | {fmt(row['steps_per_s'])} |"
        )
    write_report(
        args.out,
        {
            "machine": machine(),
            "messages": args.messages,
            "repeats": args.repeats,
            "request_bytes": args.bytes,
            "reply_bytes": len(REPLY),
            "servers": table,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
