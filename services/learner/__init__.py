"""The learner service (placeholder until its issue lands)."""
