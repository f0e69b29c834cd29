"""A real gRPC server that serves only health, behind ba3c's token interceptor.

Run as `python -m tests.servers.health_only RUN_DIR`: binds a free port, writes
addresses/health-0, serves until SIGTERM. Used to test the shared gRPC plumbing alone.
"""

import signal
import sys
import threading

from ba3c import rpc
from ba3c.rundir import RunDir


def main() -> None:
    run_dir = RunDir(sys.argv[1])
    server = rpc.make_server(run_dir.read_secret(), register=lambda s: None)
    run_dir.write_address("health", 0, server.address)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
