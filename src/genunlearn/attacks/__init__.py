"""Attacks on erased models: one module per attack, file name == registry key."""
