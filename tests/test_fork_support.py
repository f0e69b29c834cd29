"""gRPC's fork handlers are off in every ba3c process: they restart gRPC's poller in a
child between fork and exec, where Popen(close_fds=True) has closed its epoll descriptor,
and the child (the evaluator's ffmpeg) can die before exec (grpc/grpc#43055). A real
server and a real channel in a separate process, then children started by Popen; gRPC's
own log says whether its handlers ran."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT

SCRIPT = """
import os, sys
if sys.argv[1] == "ba3c":
    import ba3c  # noqa: F401
from concurrent import futures
import grpc, imageio_ffmpeg, numpy as np
server = grpc.server(futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r)}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
assert channel.unary_unary("/t.T/Echo")(b"x") == b"x"
for i in range(3):  # as the evaluator records: ffmpeg started by Popen, frames piped in
    writer = imageio_ffmpeg.write_frames(
        os.path.join(sys.argv[2], f"{i}.mp4"), (160, 224), fps=15, ffmpeg_log_level="error"
    )
    writer.send(None)
    for _ in range(5):
        writer.send(np.zeros((224, 160, 3), np.uint8))
    writer.close()
print("GRPC_ENABLE_FORK_SUPPORT =", os.environ.get("GRPC_ENABLE_FORK_SUPPORT"))
"""


def forking(importing: str, folder) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, importing, str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gRPCs_fork_handlers_run_by_default_and_not_once_ba3c_is_imported(tmp_path):
    plain, ours = forking("grpc-only", tmp_path), forking("ba3c", tmp_path)
    assert plain.returncode == 0 and ours.returncode == 0, (plain.stderr, ours.stderr)
    # without ba3c, gRPC's fork handlers are there: they log that they skip each fork
    assert "fork_posix" in plain.stderr, plain.stderr[-2000:]
    assert "GRPC_ENABLE_FORK_SUPPORT = false" in ours.stdout
    assert "fork_posix" not in ours.stderr, ours.stderr[-2000:]
