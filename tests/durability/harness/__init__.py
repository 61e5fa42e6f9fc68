"""Crash, power-loss and damaged-file harness for the durability tests and the long reliability tier.

``workload`` is what a crash child does and the model of its effects; ``zygote`` forks children from one
interpreter that imported Embeddix; ``checks`` reopens a directory and compares it with the model;
``loop`` ties them into the kill -9 loop that ``tests/durability/test_kill_loop.py`` runs briefly and
``benchmarks/reliability_long.py`` runs for thousands of iterations.
"""
