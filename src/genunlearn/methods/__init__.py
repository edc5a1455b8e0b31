"""Erasure methods: one module per method, file name == registry key."""
