"""Shared machinery for methods, attacks and metrics (plain functions, unit-tested)."""
