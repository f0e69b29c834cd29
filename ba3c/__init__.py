"""ba3c: distributed Batch-A3C as gRPC microservices. This package is the shared core.

Modules: config (the typed configuration), tensors (numpy <-> wire codec), rundir (the run
directory), rpc (gRPC servers, channels, token, health, retries), telemetry (logs and
metrics), sharding (which shard holds which variable), service (process start-up), cli
(the `ba3c` command). `ba3c.v1` holds the code generated from protos/ba3c/v1/.
"""

import os

# ba3c's processes start children only by fork + exec (the launcher's services, the
# evaluator's ffmpeg). gRPC's fork handlers (on by default) restart its poller in the child
# between the two, where Popen(close_fds=True) has closed the poller's epoll descriptor:
# the child can die before exec (grpc/grpc#43055, grpcio >= 1.81; seen as ffmpeg's "Broken
# pipe" in the evaluator). gRPC documents turning the handlers off for fork + exec. Set
# here, before any module imports grpc; a value the user set wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
