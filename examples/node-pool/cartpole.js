// CartPole-v1 in JavaScript: the same physics, termination and 500-step truncation as
// gymnasium's classic_control/cartpole.py (Euler integration in float64, observations
// rounded to float32, reward 1 on every step including the one that ends the episode).
//
// `CartPolePool` steps N of them together the way a ba3c pool does: an environment whose
// episode ended is reset at once, so the observation returned for it is the first one
// of its next episode (gymnasium's SAME_STEP autoreset).
//
// Run as a script it replays actions from given states and prints the trajectories, which
// tests/examples/test_node_pool.py compares with gymnasium's:
//   echo '[{"state": [0.01, 0, -0.02, 0], "actions": [1, 0, 1]}]' | node cartpole.js
"use strict";

const GRAVITY = 9.8;
const MASSCART = 1.0;
const MASSPOLE = 0.1;
const TOTAL_MASS = MASSPOLE + MASSCART;
const LENGTH = 0.5; // half the pole's length
const POLEMASS_LENGTH = MASSPOLE * LENGTH;
const FORCE_MAG = 10.0;
const TAU = 0.02; // seconds between state updates
const THETA_THRESHOLD = (12 * 2 * Math.PI) / 360;
const X_THRESHOLD = 2.4;

const ENV_ID = "CartPole-v1";
const OBSERVATION_SIZE = 4;
const NUM_ACTIONS = 2;
const MAX_EPISODE_STEPS = 500; // CartPole-v1's own TimeLimit

// A small seeded generator (splitmix32 to spread the seed, then mulberry32): the same
// seed gives the same episodes. Not numpy's PCG64, so episodes differ from Python's.
function makeRandom(seed) {
  let s = seed >>> 0;
  s = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
  s = Math.imul(s ^ (s >>> 13), 0xc2b2ae35);
  s = (s ^ (s >>> 16)) >>> 0;
  return function next() {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// One step of the dynamics: returns the next [x, x_dot, theta, theta_dot] and whether
// the pole fell or the cart left the track.
function physics(state, action) {
  const [x, xDot, theta, thetaDot] = state;
  const force = action === 1 ? FORCE_MAG : -FORCE_MAG;
  const cosTheta = Math.cos(theta);
  const sinTheta = Math.sin(theta);
  const temp = (force + POLEMASS_LENGTH * (thetaDot * thetaDot) * sinTheta) / TOTAL_MASS;
  const thetaAcc =
    (GRAVITY * sinTheta - cosTheta * temp) /
    (LENGTH * (4.0 / 3.0 - (MASSPOLE * (cosTheta * cosTheta)) / TOTAL_MASS));
  const xAcc = temp - (POLEMASS_LENGTH * thetaAcc * cosTheta) / TOTAL_MASS;
  const next = [
    x + TAU * xDot,
    xDot + TAU * xAcc,
    theta + TAU * thetaDot,
    thetaDot + TAU * thetaAcc,
  ];
  const terminated =
    next[0] < -X_THRESHOLD ||
    next[0] > X_THRESHOLD ||
    next[2] < -THETA_THRESHOLD ||
    next[2] > THETA_THRESHOLD;
  return { state: next, terminated };
}

class CartPolePool {
  // `seed + i` seeds environment i; episodes are cut after `maxEpisodeSteps` steps
  // (at most CartPole-v1's 500).
  constructor(numEnvs, seed, maxEpisodeSteps = MAX_EPISODE_STEPS) {
    this.numEnvs = numEnvs;
    this.maxEpisodeSteps = Math.min(MAX_EPISODE_STEPS, maxEpisodeSteps);
    this.random = [];
    for (let i = 0; i < numEnvs; i++) this.random.push(makeRandom(seed + i));
    this.states = new Array(numEnvs);
    this.lengths = new Array(numEnvs).fill(0);
    this.returns = new Array(numEnvs).fill(0);
    this.observations = new Float32Array(numEnvs * OBSERVATION_SIZE);
  }

  _resetEnv(i) {
    const next = this.random[i];
    this.states[i] = [0, 1, 2, 3].map(() => -0.05 + 0.1 * next());
    this.lengths[i] = 0;
    this.returns[i] = 0;
  }

  _observe(i) {
    this.observations.set(this.states[i], i * OBSERVATION_SIZE); // float64 -> float32
  }

  // Fresh episodes everywhere; returns the observations, float32 [N * 4].
  reset() {
    for (let i = 0; i < this.numEnvs; i++) {
      this._resetEnv(i);
      this._observe(i);
    }
    return this.observations;
  }

  // One action per environment. Returns {observations, rewards, dones, finished}, where
  // finished lists {envIndex, episodeReturn, length} of the episodes that just ended.
  step(actions) {
    const rewards = new Array(this.numEnvs);
    const dones = new Array(this.numEnvs);
    const finished = [];
    for (let i = 0; i < this.numEnvs; i++) {
      const { state, terminated } = physics(this.states[i], actions[i]);
      this.states[i] = state;
      this.lengths[i] += 1;
      this.returns[i] += 1.0;
      const truncated = this.lengths[i] >= this.maxEpisodeSteps;
      rewards[i] = 1.0;
      dones[i] = terminated || truncated;
      if (dones[i]) {
        finished.push({ envIndex: i, episodeReturn: this.returns[i], length: this.lengths[i] });
        this._resetEnv(i);
      }
      this._observe(i);
    }
    return { observations: this.observations, rewards, dones, finished };
  }
}

module.exports = {
  CartPolePool,
  physics,
  makeRandom,
  ENV_ID,
  OBSERVATION_SIZE,
  NUM_ACTIONS,
  MAX_EPISODE_STEPS,
};

if (require.main === module) {
  let input = "";
  process.stdin.on("data", (chunk) => (input += chunk));
  process.stdin.on("end", () => {
    const trajectories = JSON.parse(input).map(({ state, actions }) => {
      let current = state;
      return actions.map((action) => {
        const result = physics(current, action);
        current = result.state;
        return {
          observation: Array.from(Float32Array.from(current)),
          reward: 1.0,
          terminated: result.terminated,
        };
      });
    });
    process.stdout.write(JSON.stringify(trajectories) + "\n");
  });
}
