// Prometheus metrics for the pool, in ba3c's names (services/simulator/metrics.py), served
// as text on http://HOST:PORT/metrics and published in RUN_DIR/targets/simulator-I.json
// (Prometheus file_sd; it adds the run/role/index labels from that file).
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");

class Metric {
  constructor(name, help, type, labelled = false) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.values = new Map(); // label string ("" or 'reason="x"') -> value
    if (!labelled) this.values.set("", 0);
  }
  inc(amount = 1, labels = "") {
    this.values.set(labels, (this.values.get(labels) || 0) + amount);
  }
  set(value, labels = "") {
    this.values.set(labels, value);
  }
  render() {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`];
    for (const [labels, value] of this.values) {
      lines.push(labels ? `${this.name}{${labels}} ${value}` : `${this.name} ${value}`);
    }
    return lines.join("\n");
  }
}

class Histogram {
  constructor(name, help, buckets) {
    this.name = name;
    this.help = help;
    this.buckets = buckets;
    this.counts = new Array(buckets.length).fill(0);
    this.sum = 0;
    this.count = 0;
  }
  observe(value) {
    this.buckets.forEach((bound, i) => {
      if (value <= bound) this.counts[i] += 1;
    });
    this.sum += value;
    this.count += 1;
  }
  render() {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((bound, i) =>
      lines.push(`${this.name}_bucket{le="${bound}"} ${this.counts[i]}`),
    );
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`);
    lines.push(`${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return lines.join("\n");
  }
}

const LATENCY = [
  0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1, 2, 5,
];

const METRICS = {
  envFrames: new Metric(
    "ba3c_simulator_env_frames_total",
    "Emulator frames stepped by the pool.",
    "counter",
  ),
  agentSteps: new Metric(
    "ba3c_simulator_agent_steps_total",
    "Agent steps (one per environment per pool step).",
    "counter",
  ),
  episodes: new Metric("ba3c_simulator_episodes_total", "Games finished (all lives).", "counter"),
  episodeReturn: new Histogram(
    "ba3c_simulator_episode_return",
    "Unclipped score of each finished game.",
    [0, 10, 20, 50, 100, 200, 300, 400, 500],
  ),
  episodeLength: new Histogram(
    "ba3c_simulator_episode_length_steps",
    "Agent steps of each finished game.",
    [10, 30, 100, 200, 300, 500],
  ),
  waitSeconds: new Histogram(
    "ba3c_simulator_wait_seconds",
    "Seconds from sending a step's observations to having its actions.",
    LATENCY,
  ),
  stepSeconds: new Histogram(
    "ba3c_simulator_step_seconds",
    "Seconds stepping the whole pool once.",
    LATENCY,
  ),
  restarts: new Metric(
    "ba3c_simulator_stream_restarts_total",
    "Act streams that ended and were reopened, by reason.",
    "counter",
    true,
  ),
  connected: new Metric(
    "ba3c_simulator_connected",
    "1 while an Act stream to a learner is open.",
    "gauge",
  ),
  policyVersion: new Metric(
    "ba3c_simulator_policy_version",
    "Parameter version of the latest actions received.",
    "gauge",
  ),
};

function render() {
  return (
    Object.values(METRICS)
      .map((m) => m.render())
      .join("\n") + "\n"
  );
}

// Writes `data` to `file` so that readers see the old file or the new one, never half.
function atomicWrite(file, data) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, "w", 0o644);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

// Serves /metrics on host:any-port and publishes the target as advertise:port (default
// host:port); resolves to {address, close}, where close withdraws the target and stops
// the server.
function serve(runDir, index, host, advertise = "") {
  const server = http.createServer((req, res) => {
    if (req.url.split("?")[0] !== "/metrics") {
      res.writeHead(404).end("only /metrics here\n");
      return;
    }
    res
      .writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" })
      .end(render());
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => {
      const name = advertise || host;
      const address = `${name.includes(":") ? `[${name}]` : name}:${server.address().port}`;
      const targets = path.join(runDir, "targets");
      fs.mkdirSync(targets, { recursive: true });
      const file = path.join(targets, `simulator-${index}.json`);
      const entry = [
        {
          targets: [address],
          labels: { run: path.basename(runDir), role: "simulator", index: String(index) },
        },
      ];
      atomicWrite(file, JSON.stringify(entry, null, 1) + "\n");
      resolve({
        address,
        close() {
          fs.rmSync(file, { force: true });
          server.close();
          server.closeAllConnections();
        },
      });
    });
  });
}

module.exports = { METRICS, render, serve, atomicWrite };
