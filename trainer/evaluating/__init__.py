"""Measuring a PRM: step scoring, the metrics, the benchmark suites (ProcessBench, best-of-n, critic), the evaluation report and PRMReward."""
