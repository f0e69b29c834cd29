"""Tests across four network-namespace hosts on this machine (issue 14)."""
