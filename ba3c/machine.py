"""What this process may use of the machine: the one place that counts cores.

Every "how many threads" default (emulator threads, TensorFlow's pools, the paramserver's
optimizer threads, the launcher's pool sizes) starts from `available_cores()`, which honours
CPU affinity (a Slurm cpuset, `taskset`, a container's limits) rather than the machine's
total.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
