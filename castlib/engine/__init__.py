"""The training engine: runs, deterministic batch streams, optimisation, checkpoints, the loop, stages."""
