"""Tests across four hosts on this machine (issue 14): slurm/hetjob.sh under a real Slurm
whose nodes are network namespaces.

`cluster.py` builds the hosts: namespaces ba3c-h1..4 on a bridge (198.18.14.11-14, names
in /etc/hosts while the tests run), each with its own hostname and a `slurmd` (NodeAddr =
its address); slurmctld and a munged of their own stay outside, so the one-host cluster of
tests/slurm/ can run beside it. `job.py` places the hetjob: shards on h1, learners on h2, a
pool each on h3 and h4, the evaluator on h4 (through a second `slurmd` there: Slurm refuses
hetjob components that share a node). Each service binds its host's address (its hostname
resolves to it) and finds the others only through the run directory. The tests train
CartPole to 195 and Breakout (sync, the fc kernel split over 2 shards, a video), scrape every
service from a Prometheus outside the namespaces, take links down (a pool's host, the
learner's host, the shards' host in sync mode) and require training to go on or recover,
and stop the job in order with exit 0.
"""
