"""The benchmark harness behind `make bench` (bench/run.py): stack, seed data, wrk, report."""
