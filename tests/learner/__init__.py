"""Tests of the learner service and the shared model module."""
