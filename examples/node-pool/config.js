// What the pool needs from the run: its command line, RUN_DIR/config.toml, BA3C_*
// variables and RUN_DIR/secret, resolved in ba3c's order (config.toml, then BA3C_<KNOB>
// variables, then flags).
//
// Command line, as slurm/hetjob.sh calls any simulator pool:
//   node pool.js simulator --run-dir D --index I [--learner J] [ba3c flags...]
// The pool uses --env/-e, --seed, --simulator_procs, --learners, --max_episode_steps,
// --clip_rewards, --host, --advertise_host, --metrics, --max_message_mb and --tls; every
// other ba3c flag is accepted and ignored (init-run already wrote it into config.toml).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

class UsageError extends Error {}

// ba3c's boolean knobs (`--X` / `--no-X`, no value); every other flag takes a value.
const BOOLEAN_KNOBS = new Set([
  "rgb",
  "episodic_life",
  "clip_rewards",
  "use_sync",
  "eval_node",
  "record_node",
  "eval_greedy",
  "metrics",
  "tls",
]);
const SHORT_FLAGS = {
  "-e": "env",
  "-o": "optimizer",
  "-l": "lr",
  "-g": "replicas_to_aggregate",
  "-b": "batch_size",
};

// The knobs the pool reads: [section, name, type].
const USED = [
  ["run", "env", "string"],
  ["run", "seed", "int"],
  ["env", "max_episode_steps", "int"],
  ["env", "clip_rewards", "bool"],
  ["simulator", "simulator_procs", "int"],
  ["learner", "learners", "int"],
  ["net", "host", "string"],
  ["net", "advertise_host", "string"],
  ["net", "metrics", "bool"],
  ["net", "max_message_mb", "int"],
  ["net", "tls", "bool"],
];

// Parses `[simulator] --run-dir D --index I [--learner J] [--key value | --key=value |
// --flag | --no-flag]...` into {runDir, index, learner, flags: {knob: raw string}}.
function parseArgs(argv) {
  const args = [...argv];
  if (args[0] === "simulator") args.shift();
  const out = { runDir: null, index: 0, learner: null, flags: {} };
  for (let i = 0; i < args.length; i++) {
    let arg = args[i];
    let value = null;
    if (!arg.startsWith("-")) throw new UsageError(`unexpected argument '${arg}'`);
    if (SHORT_FLAGS[arg]) arg = "--" + SHORT_FLAGS[arg];
    if (arg.includes("="))
      [arg, value] = [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)];
    const name = arg.replace(/^--?/, "").replace(/-/g, "_");
    if (value === null && BOOLEAN_KNOBS.has(name)) {
      out.flags[name] = "true";
      continue;
    }
    if (value === null && name.startsWith("no_") && BOOLEAN_KNOBS.has(name.slice(3))) {
      out.flags[name.slice(3)] = "false";
      continue;
    }
    if (value === null) {
      if (i + 1 >= args.length) throw new UsageError(`${arg} needs a value`);
      value = args[++i];
    }
    if (name === "run_dir") out.runDir = value;
    else if (name === "index") out.index = toInt(value, "--index");
    else if (name === "learner") out.learner = toInt(value, "--learner");
    else out.flags[name] = value;
  }
  if (!out.runDir) throw new UsageError("--run-dir is required");
  if (out.index < 0) throw new UsageError(`--index must be >= 0, got ${out.index}`);
  if (out.learner !== null && out.learner < 0) {
    throw new UsageError(`--learner must be >= 0, got ${out.learner}`);
  }
  return out;
}

function toInt(raw, what) {
  if (!/^-?\d+$/.test(String(raw).trim()))
    throw new UsageError(`${what}: '${raw}' is not an integer`);
  return Number.parseInt(raw, 10);
}

function convert(raw, type, what) {
  if (type === "int") return typeof raw === "number" ? raw : toInt(raw, what);
  if (type === "bool") {
    if (typeof raw === "boolean") return raw;
    const s = String(raw).trim().toLowerCase();
    if (["1", "true", "yes", "on"].includes(s)) return true;
    if (["0", "false", "no", "off"].includes(s)) return false;
    throw new UsageError(`${what}: '${raw}' is not a boolean`);
  }
  return String(raw);
}

// The subset of TOML that ba3c writes: [section] headers, `key = value` with a string,
// a number or a boolean, and # comments. Returns {section: {key: value}}.
function parseToml(text, file) {
  const out = {};
  let section = out;
  text.split("\n").forEach((line, n) => {
    const s = line.trim();
    if (!s || s.startsWith("#")) return;
    const header = /^\[([A-Za-z0-9_.-]+)\]$/.exec(s);
    if (header) {
      section = out[header[1]] = out[header[1]] || {};
      return;
    }
    const pair = /^([A-Za-z0-9_-]+)\s*=\s*(.+?)\s*(#[^"]*)?$/.exec(s);
    if (!pair) throw new UsageError(`${file}:${n + 1}: cannot read '${s}'`);
    const raw = pair[2];
    let value;
    if (raw === "true" || raw === "false") value = raw === "true";
    else if (raw.startsWith('"')) value = JSON.parse(raw);
    else if (!Number.isNaN(Number(raw.replace(/_/g, "")))) value = Number(raw.replace(/_/g, ""));
    else throw new UsageError(`${file}:${n + 1}: unsupported value '${raw}'`);
    section[pair[1]] = value;
  });
  return out;
}

// Defaults (ba3c's), then config.toml, then BA3C_* variables, then flags.
function resolve(args, environ = process.env) {
  const runDir = path.resolve(args.runDir);
  if (!fs.existsSync(runDir) || !fs.statSync(runDir).isDirectory()) {
    throw new UsageError(`run directory ${runDir} does not exist`);
  }
  const cfg = {
    env: "ALE/Breakout-v5",
    seed: 0,
    max_episode_steps: 27000,
    clip_rewards: true,
    simulator_procs: 16,
    learners: 1,
    host: "",
    advertise_host: "",
    metrics: true,
    max_message_mb: 256,
    tls: false,
  };
  const tomlPath = path.join(runDir, "config.toml");
  const toml = fs.existsSync(tomlPath)
    ? parseToml(fs.readFileSync(tomlPath, "utf8"), tomlPath)
    : {};
  for (const [section, name, type] of USED) {
    const sources = [
      [toml[section] && toml[section][name], `${tomlPath} [${section}] ${name}`],
      [environ["BA3C_" + name.toUpperCase()], `environment BA3C_${name.toUpperCase()}`],
      [args.flags[name], `flag --${name}`],
    ];
    for (const [raw, what] of sources) {
      if (raw !== undefined) cfg[name] = convert(raw, type, what);
    }
  }
  if (cfg.simulator_procs < 1) {
    throw new UsageError(`simulator_procs must be >= 1, got ${cfg.simulator_procs}`);
  }
  if (cfg.learners < 1) throw new UsageError(`learners must be >= 1, got ${cfg.learners}`);
  return { runDir, cfg };
}

// The run's token: RUN_DIR/secret without its trailing newline (grpc-js refuses a
// header value that ends with one). Like ba3c, refuses a secret others can read.
function readSecret(runDir) {
  const file = path.join(runDir, "secret");
  let st;
  try {
    st = fs.statSync(file);
  } catch {
    throw new UsageError(
      `${file} does not exist; start the run with \`ba3c train\` or ` +
        "`ba3c init-run`, which write it",
    );
  }
  if (st.mode & 0o077) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, "0");
    throw new UsageError(
      `${file} is readable by others (mode ${mode}); run \`chmod 600 ${file}\` and start again`,
    );
  }
  const token = fs.readFileSync(file, "utf8").trim();
  if (!token) throw new UsageError(`${file} is empty`);
  return token;
}

// Where to serve /metrics: the configured host, else the node's name under Slurm, else
// loopback (ba3c.rpc.bind_host).
function bindHost(cfg, environ = process.env) {
  if (cfg.host) return cfg.host;
  if (environ.SLURM_JOB_ID) return os.hostname();
  return "127.0.0.1";
}

module.exports = { UsageError, parseArgs, parseToml, resolve, readSecret, bindHost };
