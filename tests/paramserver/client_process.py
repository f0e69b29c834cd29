"""A stand-in learner process: registers with shard 0, optionally initializes it, then
pushes gradients in a loop and prints one JSON line per reply.

    python -m tests.paramserver.client_process --run-dir DIR --client-id learner-1
        [--initialize] [--pushes N]

Used where a test needs a learner it can kill with SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import grpc

from ba3c.rundir import RunDir
from ba3c.v1 import paramserver_pb2 as pb
from tests.paramserver.support import Client, gradients, initial_values


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--initialize", action="store_true")
    parser.add_argument("--pushes", type=int, default=0, help="0: until killed")
    args = parser.parse_args()
    run_dir = RunDir(args.run_dir)
    client = Client(run_dir, client_id=args.client_id)
    client.register()
    if args.initialize:
        client.initialize(initial_values())
    while True:
        try:
            version = client.pull()[0].version
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            time.sleep(0.05)
    n = 0
    while args.pushes == 0 or n < args.pushes:
        reply, _ = client.push(version, gradients(n, scale=0.1), env_frames=4)
        print(
            json.dumps(
                {
                    "sent": version,
                    "version": reply.version,
                    "t": time.time(),
                    "outcome": pb.PushOutcome.Name(reply.outcome),
                }
            ),
            flush=True,
        )
        version = reply.version
        n += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
