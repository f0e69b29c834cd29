"""`ba3c learner`: serves Learner.Act, trains with A3C, pushes to the parameter servers.

Start-up order: build the model from the run's environment (ba3c.envs.describe), join
every shard (learner 0 initializes the empty ones, others wait), pull the parameters,
then listen and publish addresses/learner-I, so pools only ever talk to a ready learner.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence

import numpy as np
import structlog

from ba3c import envs, models, rpc, service
from ba3c.paramserver_client import ParamServerClient, ParamServerError, Stopped
from ba3c.v1 import paramserver_pb2 as ps_pb
from services.learner import metrics, warm_start
from services.learner.a3c import make_train_step
from services.learner.act import ActServicer, ModelSpec, add_to_server
from services.learner.predictor import Predictor
from services.learner.progress import Progress
from services.learner.trainer import Trainer

log = structlog.get_logger()
ROLE = "learner"
MAX_POOL_STREAMS = 60  # Act streams served at once (of 64 server threads)


def main(argv: Sequence[str] | None = None) -> int:
    ctx = service.start(argv, ROLE, __doc__.splitlines()[0])
    try:
        return run(ctx)
    finally:
        ctx.telemetry.close()


def run(ctx: service.ServiceContext) -> int:
    cfg, lc = ctx.cfg, ctx.cfg.learner
    threads = models.configure_threads(lc.threads)
    try:
        env = envs.describe(cfg)
        obs_dtype = np.dtype(env.observation_dtype).name
        model = models.build_model(cfg, tuple(env.observation_shape), env.num_actions, obs_dtype)
    except (envs.EnvError, models.ModelError) as e:
        return service.fail(ROLE, str(e))
    layout = models.assignment(cfg, model)
    log.info(
        "model built",
        kind=model.kind,
        env=cfg.run.env,
        threads=threads,
        observation_shape=list(model.observation_shape),
        num_actions=model.num_actions,
        parameters=sum(p.size for p in layout.pieces),
        pieces=len(layout.pieces),
    )

    shards = ParamServerClient(
        ctx.run_dir,
        ctx.token,
        layout,
        ctx.name,
        ps_pb.LEARNER,
        ctx.stop,
        rpc_timeout=cfg.net.rpc_timeout,
        max_message_bytes=rpc.message_limit(cfg.net.max_message_mb),
        grad_dtype=lc.grad_dtype,
        params_dtype=lc.params_dtype,
        hooks=metrics.paramserver_hooks(),
    )
    try:
        shards.connect()
        if ctx.index == 0:
            if cfg.run.init_from:
                warm_start.load(model, cfg.run.init_from)
            shards.initialize(models.get_weights(model))
            shards.reinitialize = lambda: models.get_weights(model)
        models.set_weights(model, shards.wait_initialized())
        metrics.VERSION.set(shards.version)
    except (ParamServerError, warm_start.WarmStartError) as e:
        shards.close()
        return service.fail(ROLE, str(e))
    except Stopped:
        shards.close()
        log.info("stopped before the shards were ready")
        return 0

    progress = Progress()
    transitions: queue.Queue = queue.Queue(maxsize=lc.queue_size)
    predictor = Predictor(
        model.predict,
        lc.predict_batch_size,
        lc.predict_wait_ms / 1000.0,
        # a batch waits for at most one request per pool: the halves of a double-buffered
        # pool take turns, so waiting for both would put them back in step
        waiting_streams_limit=lambda: max(1, progress.pools),
        on_batch=metrics.PREDICT_BATCH.observe,
    )
    servicer = ActServicer(
        ModelSpec(model.observation_shape, obs_dtype, model.num_actions),
        predictor,
        transitions,
        progress,
        lambda: shards.version,
        lc.t_max,
        lc.gamma,
        seed=cfg.run.seed * 1000 + ctx.index,
        stop=ctx.stop,
    )
    train_step = make_train_step(model, lc.entropy_beta, lc.value_loss_coef, lc.grad_clip)
    _warm_up(model, train_step, lc.batch_size)
    trainer = Trainer(
        model,
        train_step,
        shards,
        transitions,
        progress,
        lc.batch_size,
        ctx.run_dir.sub("tensorboard") / ctx.name,
        ctx.stop,
    )
    trainer.start()

    try:
        server = rpc.make_server(
            ctx.token,
            lambda s: add_to_server(servicer, s),
            host=ctx.host,
            advertise=ctx.advertise,
            port=ctx.args.port,
            max_message_bytes=rpc.message_limit(cfg.net.max_message_mb),
            max_workers=64,
            service_names=["ba3c.v1.Learner"],
            # a stream holds a thread for its whole life: pools beyond this are refused at
            # once (RESOURCE_EXHAUSTED; they back off and retry) instead of queueing
            # without bound for a thread
            max_concurrent_rpcs=MAX_POOL_STREAMS,
        )
    except OSError as e:
        ctx.stop.set()
        return service.fail(ROLE, str(e))
    ctx.run_dir.write_address(ROLE, ctx.index, server.address)
    log.info("learner serving", address=server.address, version=shards.version)

    ctx.stop.wait()
    log.info("stopping")
    ctx.run_dir.remove_address(ROLE, ctx.index)
    server.stop(grace=1.0)
    predictor.stop()
    shards.close()  # cancels a PushPull in flight, so the trainer ends at once
    trainer.join(10)
    return 1 if trainer.error else 0


def _warm_up(model: models.PolicyValueModel, train_step, batch_size: int) -> None:
    """Traces the compiled functions before pools arrive (seconds, not per step)."""
    observations = np.zeros(
        (batch_size, *model.observation_shape), model.observation_dtype.as_numpy_dtype
    )
    model.predict(observations[:1])
    train_step(observations, np.zeros(batch_size, np.int32), np.zeros(batch_size, np.float32))
