"""Benchmarks: figures measured side by side in one run, reported as ratios to the raw HSM rate."""
