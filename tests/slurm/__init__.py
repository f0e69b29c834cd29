"""Tests that run ba3c under a real Slurm cluster started on this machine."""
