"""The conformance kit: `ba3c conformance ROLE --run-dir D` checks any implementation of a
role (paramserver, learner, simulator, evaluator) against docs/contracts.md, only through
gRPC and the run directory. One line per check, a summary, exit code 1 on a failure.
"""
