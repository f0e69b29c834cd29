"""ba3c: distributed Batch-A3C as gRPC microservices. This package is the shared core.

Modules: config (the typed configuration), tensors (numpy <-> wire codec), rundir (the run
directory), rpc (gRPC servers, channels, token, health, retries), telemetry (logs and
metrics), sharding (which shard holds which variable), service (process start-up), cli
(the `ba3c` command). `ba3c.v1` holds the code generated from protos/ba3c/v1/.
"""

__version__ = "0.1.0"
