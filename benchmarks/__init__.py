"""K2 benchmarks: ``python -m benchmarks.bench_<topic> [--quick]``, each printing medians and a ratio
against a baseline measured in the same run."""
