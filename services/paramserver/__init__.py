"""The paramserver service (placeholder until its issue lands)."""
