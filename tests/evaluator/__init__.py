"""Tests of the evaluator service and `ba3c evaluate`."""
