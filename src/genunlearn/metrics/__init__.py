"""Metric families: one module per family."""
