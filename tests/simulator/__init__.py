"""Tests of the simulator service and the shared environment module (ba3c.envs)."""
