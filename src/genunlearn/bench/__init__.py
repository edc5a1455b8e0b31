"""Benchmark grids: spec expansion, runner (in-process or Ray), JSONL results."""
