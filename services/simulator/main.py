"""`ba3c simulator`: a pool of environments that streams to a learner, and nothing else.

    ba3c simulator --run-dir DIR --index I [--learner J] [--simulator_procs N] [--env ID]
    ba3c simulator --list-envs

Pool I steps `simulator_procs` environments of `env` together and opens one Act stream
to learner J (default I mod `learners`), found in RUN_DIR/addresses/learner-J and waited
for. Double-buffered (`double_buffer`, Atari, 2 or more environments): the environments
are two halves, each with its own Act stream (pool ids `simulator-I/a` and `simulator-I/b`)
in its own thread, so that one half steps (ALE releases the GIL) while the other waits for
its actions. With `newest_frame` (Atari) each request carries only the newest frame of
each observation and the learner stacks them (PoolSpec.frame_stack). If a stream breaks
(the learner restarts, moves to another port, or refuses a message), its half backs off
(ba3c.backoff: 0.2 s doubling to 5 s, with jitter), reads the address again and starts
over with fresh episodes; it never gives up. SIGTERM or
SIGINT ends it cleanly with exit code 0. A bad environment id ends it at once with a
one-line error (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

import grpc
import structlog

from ba3c import envs, rpc, rundir, service
from ba3c.backoff import Backoff
from services.simulator import metrics, stream

log = structlog.get_logger()

ROLE = "simulator"
SEED_STRIDE = 10_000  # pool I seeds its environments with seed + 10_000 * (I + 1) + i


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--learner",
        type=int,
        default=None,
        help="Index of the learner to stream to (default: --index mod --learners).",
    )
    parser.add_argument(
        "--list-envs",
        action="store_true",
        help="Print the environment ids a pool accepts and exit (needs no --run-dir).",
    )


def list_envs() -> int:
    ids = envs.valid_ids()
    print("Atari (ROM chosen by the id; ba3c's own preprocessing always applies):")
    print("  " + " ".join(ids["atari"]))
    print("Other gymnasium ids (need a 1-D Box observation and Discrete actions):")
    print("  " + " ".join(ids["other"]))
    return 0


def halves(num_envs: int, double_buffer: bool, is_atari: bool) -> list[int]:
    """Environments per Act stream: two halves when double-buffered, else all in one.
    (CartPole-like pools step in Python, holding the GIL: halves would not overlap.)"""
    if double_buffer and is_atari and num_envs >= 2:
        return [num_envs - num_envs // 2, num_envs // 2]
    return [num_envs]


def make_pools(ctx: service.ServiceContext, num_envs: int, seed: int) -> list[envs.EnvPool]:
    """The pool's environments, as one EnvPool per Act stream; environment i of the whole
    pool is seeded seed + i however they are split. Raises envs.EnvError."""
    sim = ctx.cfg.simulator
    sizes = halves(num_envs, sim.double_buffer, envs.describe(ctx.cfg).is_atari)
    pools: list[envs.EnvPool] = []
    try:
        for size in sizes:
            first = seed + sum(p.num_envs for p in pools)
            pools.append(envs.make_pool(ctx.cfg, size, first, sim.newest_frame))
    except BaseException:
        for p in pools:
            p.close()
        raise
    return pools


def stream_halves(ctx: service.ServiceContext, pools: list[envs.EnvPool], learner: int) -> None:
    """Streams every pool (half) to the learner, each in its own thread; an unexpected
    error in one stops the others and is raised here."""
    if len(pools) == 1:
        stream_forever(ctx, pools[0], learner, ctx.name)
        return
    errors: list[BaseException] = []

    def half(pool: envs.EnvPool, pool_id: str) -> None:
        try:
            stream_forever(ctx, pool, learner, pool_id)
        except BaseException as e:
            errors.append(e)
            ctx.stop.set()

    threads = [
        threading.Thread(target=half, args=(p, f"{ctx.name}/{'ab'[i]}"), name=f"half-{i}")
        for i, p in enumerate(pools)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def stream_forever(
    ctx: service.ServiceContext, pool: envs.EnvPool, learner: int, pool_id: str
) -> None:
    """Streams to learner `learner` until ctx.stop is set, reconnecting on every failure."""
    limit = rpc.message_limit(ctx.cfg.net.max_message_mb)
    backoff = Backoff()
    while not ctx.stop.is_set():
        try:
            address = ctx.run_dir.wait_for_address("learner", learner, stop=ctx.stop)
        except rundir.Stopped:
            return
        reason, responses = "", 0
        with rpc.make_channel(address, ctx.token, limit) as channel:
            log.info("connecting to learner", learner=learner, address=address)
            try:
                with stream.ActStream(channel, ctx.stop) as act:
                    try:
                        stream.run(pool, act, pool_id, ctx.stop)
                    finally:
                        responses = act.responses
            except grpc.RpcError as e:
                if ctx.stop.is_set():
                    return
                reason = e.code().name.lower()
                log.warning(
                    "stream to learner broke",
                    code=e.code().name,
                    details=e.details(),
                    responses=responses,
                )
            except stream.ProtocolError as e:
                reason = "protocol"
                log.error("learner broke the Act contract", error=str(e), responses=responses)
            finally:
                metrics.CONNECTED.set(0)
        if ctx.stop.is_set():
            return
        metrics.STREAM_RESTARTS.labels(reason=reason or "unknown").inc()
        if responses:
            backoff.reset()
        ctx.stop.wait(backoff.next())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-envs" in argv:
        return list_envs()
    ctx = service.start(argv, ROLE, __doc__.split("\n")[0], add_arguments)
    try:
        learners = ctx.cfg.learner.learners
        learner = ctx.args.learner if ctx.args.learner is not None else ctx.index % learners
        if learner < 0:
            return service.fail(ROLE, f"--learner must be >= 0, got {learner}")
        num_envs = ctx.cfg.simulator.simulator_procs
        seed = ctx.cfg.run.seed + SEED_STRIDE * (ctx.index + 1)
        try:
            pools = make_pools(ctx, num_envs, seed)
        except envs.EnvError as e:
            return service.fail(ROLE, str(e))
        log.info(
            "pool ready",
            env=ctx.cfg.run.env,
            num_envs=num_envs,
            streams=[p.num_envs for p in pools],
            frame_stack=pools[0].frame_stack,
            learner=learner,
            observation_shape=list(pools[0].spec.observation_shape),
            num_actions=pools[0].spec.num_actions,
            seed=seed,
        )
        try:
            stream_halves(ctx, pools, learner)
        finally:
            for pool in pools:
                pool.close()
        log.info("stopped")
        return 0
    finally:
        ctx.telemetry.close()
