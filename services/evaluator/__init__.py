"""The evaluator service (placeholder until its issue lands)."""
