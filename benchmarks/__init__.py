"""Speed and memory benchmarks (``make bench``). Each ``bench_*.py`` module has ``run() -> dict``;
results are ratios measured within one run, written to ``results/benchmarks/<name>.json``."""
