"""Tools around a run, not shared core: `ba3c report` (PNG plots of a finished run) and
`ba3c monitor` (a local Prometheus for one run). No service imports them (a test checks)."""
