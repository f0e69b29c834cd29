"""The simulator service (placeholder until its issue lands)."""
