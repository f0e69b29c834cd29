#!/usr/bin/env node
// A ba3c simulator pool in Node.js: N CartPole-v1 environments streaming to a learner
// over Learner.Act (protos/ba3c/v1/learner.proto, loaded at run time, no generated code).
//
//   node pool.js simulator --run-dir D --index I [--learner J] [ba3c flags...]
//
// Pool I steps `simulator_procs` environments and opens one Act stream to learner J
// (default I mod `learners`), found in RUN_DIR/addresses/learner-J and waited for. Every
// call carries `authorization: Bearer <RUN_DIR/secret>`. Per pool step it sends one
// ActRequest (the spec in the first one only; afterwards the rewards and dones of the
// previous actions and the episodes they ended) and reads one ActResponse. If the stream
// breaks, or the learner's reply breaks the contract, it backs off (0.2 s doubling to
// 5 s), reads the address again and starts over with fresh episodes; it never gives up.
// SIGTERM or SIGINT: exit 0. A bad flag, run directory or environment id: one line on
// stderr, exit 2. Logs go to RUN_DIR/logs/simulator-I.log (JSON lines) and stderr.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const { CartPolePool, ENV_ID, OBSERVATION_SIZE, NUM_ACTIONS } = require("./cartpole");
const config = require("./config");
const metrics = require("./metrics");

const PROG = "node-pool simulator";
const SEED_STRIDE = 10000; // pool I seeds environment i with seed + 10000 * (I + 1) + i
const PROGRESS_EVERY_MS = 30000;
const FLOAT32 = 1; // ba3c.v1.DType.FLOAT32

class ProtocolError extends Error {}

// ---------------------------------------------------------------------------------------
// Logging: JSON lines in RUN_DIR/logs/ROLE-I.log, a short line on stderr.

class Log {
  constructor(file, bound) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.fd = fs.openSync(file, "a");
    this.bound = bound;
  }
  write(level, event, fields = {}) {
    const timestamp = new Date().toISOString();
    const line = { ...fields, ...this.bound, level, timestamp, event };
    fs.writeSync(this.fd, JSON.stringify(line) + "\n");
    const extra = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ");
    process.stderr.write(`${timestamp} [${level}] ${event} ${extra}\n`);
  }
  info(event, fields) {
    this.write("info", event, fields);
  }
  warning(event, fields) {
    this.write("warning", event, fields);
  }
  error(event, fields) {
    this.write("error", event, fields);
  }
}

// ---------------------------------------------------------------------------------------
// Stopping: SIGTERM/SIGINT set `stopped`, cancel what waits, and wake sleepers.

class Stop {
  constructor() {
    this.stopped = false;
    this.listeners = new Set();
    this.promise = new Promise((resolve) => (this.resolve = resolve));
  }
  set(signal) {
    if (this.stopped) return;
    this.stopped = true;
    this.signal = signal;
    this.resolve();
    for (const listener of this.listeners) listener();
  }
  onStop(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  // Waits `ms` milliseconds, or less if stopped meanwhile.
  sleep(ms) {
    let timer;
    return Promise.race([
      new Promise((resolve) => (timer = setTimeout(resolve, ms))),
      this.promise,
    ]).finally(() => clearTimeout(timer));
  }
}

class Backoff {
  constructor(initial = 200, maximum = 5000) {
    this.initial = initial;
    this.maximum = maximum;
    this.reset();
  }
  reset() {
    this.nextMs = this.initial;
  }
  next() {
    const delay = this.nextMs * (0.8 + 0.4 * Math.random());
    this.nextMs = Math.min(this.maximum, this.nextMs * 2);
    return delay;
  }
}

// ---------------------------------------------------------------------------------------
// The Act stream

function loadLearnerService() {
  const protos = process.env.BA3C_PROTOS || path.resolve(__dirname, "..", "..", "protos");
  const definition = protoLoader.loadSync("ba3c/v1/learner.proto", {
    includeDirs: [protos],
    keepCase: true,
    longs: Number,
    enums: Number,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).ba3c.v1.Learner;
}

// Reads RUN_DIR/addresses/learner-J until it exists; null if stopped first.
async function waitForAddress(runDir, learner, stop) {
  const file = path.join(runDir, "addresses", `learner-${learner}`);
  while (!stop.stopped) {
    try {
      const address = fs.readFileSync(file, "utf8").trim();
      if (address) return address;
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
    }
    await stop.sleep(100);
  }
  return null;
}

function observationsTensor(observations, numEnvs) {
  // A copy: the pool reuses its buffer for the next step.
  const data = Buffer.from(observations.buffer.slice(0, observations.byteLength));
  return { dtype: FLOAT32, shape: [numEnvs, OBSERVATION_SIZE], data };
}

function checkedActions(response, numEnvs) {
  const actions = response.actions;
  if (actions.length !== numEnvs) {
    throw new ProtocolError(
      `ActResponse.actions has ${actions.length} entries, expected ${numEnvs}`,
    );
  }
  for (const a of actions) {
    if (!Number.isInteger(a) || a < 0 || a >= NUM_ACTIONS) {
      throw new ProtocolError(`ActResponse.actions must be in [0, ${NUM_ACTIONS}), got ${a}`);
    }
  }
  return actions;
}

class Progress {
  constructor(log, poolId, numEnvs) {
    Object.assign(this, { log, poolId, numEnvs });
    this.restart(Date.now());
  }
  restart(now) {
    Object.assign(this, { since: now, steps: 0, wait: 0, stepping: 0, returns: [] });
  }
  add(wait, stepping, finished) {
    this.steps += 1;
    this.wait += wait;
    this.stepping += stepping;
    for (const f of finished) this.returns.push(f.episodeReturn);
    const now = Date.now();
    const elapsed = (now - this.since) / 1000;
    if (elapsed * 1000 < PROGRESS_EVERY_MS) return;
    const mean = this.returns.length
      ? this.returns.reduce((a, b) => a + b, 0) / this.returns.length
      : null;
    this.log.info("pool progress", {
      pool_id: this.poolId,
      agent_steps_per_s: Math.round((10 * this.steps * this.numEnvs) / elapsed) / 10,
      wait_fraction: Math.round((1000 * this.wait) / elapsed) / 1000,
      step_fraction: Math.round((1000 * this.stepping) / elapsed) / 1000,
      episodes: this.returns.length,
      mean_return: mean === null ? null : Math.round(mean * 100) / 100,
    });
    this.restart(now);
  }
}

// One stream in lockstep until it breaks (rejects with a gRPC error or ProtocolError) or
// `stop` is set (resolves). Counts the learner's answers in `counter.responses`. Every
// stream starts with fresh episodes, so a learner never sees half a trajectory.
async function runStream(client, ctx, counter) {
  const { pool, poolId, spec, token, stop, log } = ctx;
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const call = client.Act(metadata);
  const responses = call[Symbol.asyncIterator]();
  const unsubscribe = stop.onStop(() => call.cancel());
  const progress = new Progress(log, poolId, pool.numEnvs);
  let request = {
    spec,
    pool_id: poolId,
    observations: observationsTensor(pool.reset(), pool.numEnvs),
  };
  try {
    while (!stop.stopped) {
      const sent = performance.now();
      call.write(request);
      let next;
      try {
        next = await responses.next();
      } catch (e) {
        if (stop.stopped) return; // the stop cancelled the call: a clean end
        throw e;
      }
      if (next.done) throw new ProtocolError("the learner ended the stream without an error");
      const received = performance.now();
      if (counter.responses++ === 0) {
        metrics.METRICS.connected.set(1);
        log.info("streaming", { pool_id: poolId, num_envs: pool.numEnvs });
      }
      const response = next.value;
      const step = pool.step(checkedActions(response, pool.numEnvs));
      const stepped = performance.now();
      request = {
        pool_id: poolId,
        observations: observationsTensor(step.observations, pool.numEnvs),
        rewards: ctx.clipRewards
          ? step.rewards.map((r) => Math.max(-1, Math.min(1, r)))
          : step.rewards,
        dones: step.dones,
        finished_episodes: step.finished.map((f) => ({
          env_index: f.envIndex,
          episode_return: f.episodeReturn,
          length: f.length,
          frames: f.length, // no frame skip: one frame per agent step
        })),
        env_frames: pool.numEnvs,
      };
      account(response, step, (received - sent) / 1000, (stepped - received) / 1000, pool.numEnvs);
      progress.add((received - sent) / 1000, (stepped - received) / 1000, step.finished);
    }
  } finally {
    unsubscribe();
    call.cancel();
  }
}

function account(response, step, wait, stepping, numEnvs) {
  const m = metrics.METRICS;
  m.waitSeconds.observe(wait);
  m.stepSeconds.observe(stepping);
  m.envFrames.inc(numEnvs);
  m.agentSteps.inc(numEnvs);
  m.policyVersion.set(response.version);
  for (const f of step.finished) {
    m.episodes.inc();
    m.episodeReturn.observe(f.episodeReturn);
    m.episodeLength.observe(f.length);
  }
}

function credentials(runDir, cfg) {
  if (!cfg.tls) return grpc.credentials.createInsecure();
  const ca = path.join(runDir, "tls", "ca.crt");
  return grpc.credentials.createSsl(fs.readFileSync(ca)); // trust the run's CA only
}

function channelOptions(cfg) {
  const bytes = Math.max(1, cfg.max_message_mb) * 1024 * 1024;
  return {
    "grpc.max_send_message_length": bytes,
    "grpc.max_receive_message_length": bytes,
    "grpc.keepalive_time_ms": 20000,
    "grpc.keepalive_timeout_ms": 10000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 2000,
  };
}

// Streams to learner `learner` until stopped, reconnecting after every failure.
async function streamForever(ctx, learner) {
  const { runDir, cfg, stop, log } = ctx;
  const Learner = loadLearnerService();
  const backoff = new Backoff();
  while (!stop.stopped) {
    const address = await waitForAddress(runDir, learner, stop);
    if (address === null) return;
    const client = new Learner(address, credentials(runDir, cfg), channelOptions(cfg));
    const counter = { responses: 0 };
    let reason = "";
    log.info("connecting to learner", { learner, address });
    try {
      await runStream(client, ctx, counter);
    } catch (e) {
      if (stop.stopped) return;
      if (e instanceof ProtocolError) {
        reason = "protocol";
        log.error("learner broke the Act contract", {
          error: e.message,
          responses: counter.responses,
        });
      } else if (e.code !== undefined) {
        reason = grpc.status[e.code].toLowerCase();
        log.warning("stream to learner broke", {
          code: grpc.status[e.code],
          details: e.details,
          responses: counter.responses,
        });
      } else {
        throw e;
      }
    } finally {
      metrics.METRICS.connected.set(0);
      client.close();
    }
    if (stop.stopped) return;
    metrics.METRICS.restarts.inc(1, `reason="${reason || "unknown"}"`);
    if (counter.responses) backoff.reset();
    await stop.sleep(backoff.next());
  }
}

// ---------------------------------------------------------------------------------------

function fail(message) {
  process.stderr.write(`${PROG}: error: ${message}\n`);
  return 2;
}

const USAGE = `usage: node pool.js simulator --run-dir D [--index I] [--learner J] [ba3c flags...]

A ba3c simulator pool in Node.js: simulator_procs CartPole-v1 environments streaming to
learner J (default I mod learners) over Learner.Act. See examples/node-pool/README.md.
`;

async function main(argv) {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(USAGE);
    return 0;
  }
  let args, runDir, cfg, token;
  try {
    args = config.parseArgs(argv);
    ({ runDir, cfg } = config.resolve(args));
    token = config.readSecret(runDir);
    if (cfg.env !== ENV_ID) {
      throw new config.UsageError(`this pool only runs ${ENV_ID}, the run's env is '${cfg.env}'`);
    }
    if (cfg.tls && !fs.existsSync(path.join(runDir, "tls", "ca.crt"))) {
      throw new config.UsageError(
        `net.tls is on but ${path.join(runDir, "tls", "ca.crt")} does not exist`,
      );
    }
    if (os.endianness() !== "LE")
      throw new config.UsageError("tensors are little-endian; this machine is not");
  } catch (e) {
    if (e instanceof config.UsageError) return fail(e.message);
    throw e;
  }
  const stop = new Stop();
  for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => stop.set(signal));
  const index = args.index;
  const log = new Log(path.join(runDir, "logs", `simulator-${index}.log`), {
    run: path.basename(runDir),
    role: "simulator",
    index,
  });
  let telemetry = null;
  if (cfg.metrics) {
    telemetry = await metrics.serve(runDir, index, config.bindHost(cfg), cfg.advertise_host);
  }
  log.info("telemetry ready", {
    metrics: telemetry && telemetry.address,
    implementation: "node-pool",
  });
  try {
    const learner = args.learner !== null ? args.learner : index % cfg.learners;
    const numEnvs = cfg.simulator_procs;
    const seed = cfg.seed + SEED_STRIDE * (index + 1);
    const ctx = {
      runDir,
      cfg,
      token,
      stop,
      log,
      pool: new CartPolePool(numEnvs, seed, cfg.max_episode_steps),
      poolId: `simulator-${index}`,
      clipRewards: cfg.clip_rewards,
      spec: {
        env_id: ENV_ID,
        num_envs: numEnvs,
        observation_shape: [OBSERVATION_SIZE],
        observation_dtype: FLOAT32,
        num_actions: NUM_ACTIONS,
      },
    };
    log.info("pool ready", { env: ENV_ID, num_envs: numEnvs, learner, seed });
    await streamForever(ctx, learner);
    if (stop.signal) log.info("signal received, stopping", { signal: stop.signal });
    log.info("stopped");
    return 0;
  } finally {
    if (telemetry) telemetry.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`${PROG}: error: ${e.stack || e}\n`);
      process.exit(1);
    },
  );
}

module.exports = { main };
