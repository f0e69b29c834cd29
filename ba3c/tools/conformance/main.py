"""`ba3c conformance ROLE --run-dir D`: check an implementation of ROLE against the contract.

    ba3c conformance paramserver --run-dir D [--index K]   a fresh shard at addresses/paramserver-K
    ba3c conformance learner     --run-dir D [--index I]   a learner at addresses/learner-I
    ba3c conformance simulator   --run-dir D [--index I]   the kit serves a fake learner at
                                                           addresses/learner-I; start the pool
                                                           under test with that learner index
    ba3c conformance evaluator   --run-dir D               the kit serves fake shards at
                                                           addresses/paramserver-K; start
                                                           the evaluator under test

See docs/contracts.md ("Conformance kit"). Prints one line per check and a summary; exit
code 0 if every check passed, 1 if one failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Sequence

from ba3c.tools.conformance.suite import Suite
from ba3c.tools.conformance.target import Target

ROLES = ("paramserver", "learner", "simulator", "evaluator")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ba3c conformance",
        description="Check an implementation of a ba3c role against docs/contracts.md.",
    )
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--run-dir", required=True, help="The run directory the service uses.")
    parser.add_argument("--index", type=int, default=0, help="Index of the server under test.")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="Seconds to wait for the service (its address, a pool's stream, ...).",
    )
    parser.add_argument(
        "--steps", type=int, default=300, help="learner/simulator: Act steps to exchange."
    )
    args = parser.parse_args(argv)
    try:
        target = Target(args.run_dir, args.index, args.timeout)
    except SystemExit as e:
        parser.exit(2, f"{e}\n")
    except Exception as e:  # noqa: BLE001 - an unusable run directory: one line, exit 2
        parser.exit(2, f"ba3c conformance: {e}\n")
    suite = Suite(args.role)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # evaluator: the model needs TensorFlow
    module = importlib.import_module(f"ba3c.tools.conformance.{args.role}")
    try:
        module.run(target, suite, **({"steps": args.steps} if args.role != "paramserver" else {}))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    return suite.summary()
