"""The learner's counters (in-process): a double-buffered pool's two streams are one pool."""

from services.learner.progress import Progress


def test_the_halves_of_a_double_buffered_pool_count_as_one_pool():
    progress = Progress()
    progress.pool_joined("simulator-0/a")
    progress.pool_joined("simulator-0/b")
    progress.pool_joined("simulator-1")  # a single-stream pool
    assert (progress.pools, progress.streams) == (2, 3)
    progress.pool_left("simulator-0/a")
    assert (progress.pools, progress.streams) == (2, 2)  # its other half still streams
    progress.pool_left("simulator-0/b")
    progress.pool_left("simulator-1")
    assert (progress.pools, progress.streams) == (0, 0)
