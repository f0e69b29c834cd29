"""`ba3c paramserver`: serve one shard of the model's parameters.

    ba3c paramserver --run-dir DIR --index K [--port P] [--use_sync -g R] [knobs...]

Restores the newest good checkpoint from RUN_DIR/checkpoints/paramserver-K (if any), binds
a port, publishes it in RUN_DIR/addresses/paramserver-K and serves `ba3c.v1.ParameterServer`
and gRPC health until SIGTERM/SIGINT. Then it refuses new pushes, answers the callers still
waiting for a sync round, writes a final checkpoint, withdraws its address and exits 0.
numpy and numba only: this service never imports TensorFlow. The compiled update
(`kernels.py`) is built, or loaded from numba's cache, when the modules are imported,
before the address is published, so no call waits for a compiler.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from ba3c import checkpoint, rpc, service
from services.paramserver import memory
from services.paramserver.checkpointing import CheckpointWriter, restore_newest
from services.paramserver.servicer import SERVICE, ParameterServerServicer
from services.paramserver.shard import Settings, Shard

log = structlog.get_logger()
ROLE = "paramserver"


def main(argv: Sequence[str] | None = None) -> int:
    memory.reuse_large_buffers()
    ctx = service.start(argv, ROLE, "Serve one shard of the model's parameters.")
    cfg = ctx.cfg
    settings = Settings.from_config(cfg, ctx.index)
    directory = ctx.run_dir.checkpoints(ctx.index)
    writer_box: list[CheckpointWriter] = []
    shard = Shard(settings, on_checkpoint=lambda c: writer_box[0].submit(c))
    writer = CheckpointWriter(
        directory, cfg.paramserver.keep_checkpoints, on_written=shard.checkpointed
    )
    writer_box.append(writer)

    restored = restore_newest(directory)
    if restored is not None:
        shard.restore(restored)
        log.info(
            "restored from checkpoint",
            path=str(restored.path),
            version=restored.version,
            env_frames=restored.env_frames,
        )

    try:
        server = rpc.make_server(
            ctx.token,
            ParameterServerServicer(shard).register,
            host=ctx.host,
            advertise=ctx.advertise,
            port=ctx.args.port,
            max_message_bytes=rpc.message_limit(cfg.net.max_message_mb),
            service_names=(SERVICE,),
        )
    except OSError as e:
        writer.close()
        ctx.telemetry.close()
        return service.fail(ROLE, str(e))
    ctx.run_dir.write_address(ROLE, ctx.index, server.address)
    log.info(
        "serving",
        address=server.address,
        mode="sync" if settings.sync else "async",
        replicas_to_aggregate=settings.replicas,
        optimizer=settings.hyper.optimizer,
        version=shard.version,
        initialized=shard.initialized,
    )

    ctx.stop.wait()

    log.info("shutting down")
    ctx.run_dir.remove_address(ROLE, ctx.index)
    shard.close()  # refuse new pushes, answer waiting sync callers
    server.stop(grace=5.0)
    writer.close()  # finish a checkpoint in progress
    final = shard.snapshot()
    if final is not None:
        if final.version != shard.checkpoint_version:
            path = writer.write(final)
        else:
            path = directory / checkpoint.file_name(final.version)
        if path is None:
            print(
                f"ba3c paramserver {ctx.index}: the final checkpoint could not be written "
                f"(see the log); the newest one in {directory} is kept",
                flush=True,
            )
        else:
            print(f"ba3c paramserver {ctx.index}: final checkpoint {path}", flush=True)
            log.info("final checkpoint", path=str(path), version=final.version)
    ctx.telemetry.close()
    log.info("stopped", version=shard.version)
    return 0
