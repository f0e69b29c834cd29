"""Tests of the parameter-server service, against real `ba3c paramserver` processes."""
