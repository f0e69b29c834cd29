"""The local launcher behind `ba3c train`: one run, every service as a local process.

topology: which processes a configuration asks for; supervisor: starting, watching,
restarting and stopping them; progress: what the run is doing (shard status, metrics,
evaluations) and the live view; main: the command line.
"""
