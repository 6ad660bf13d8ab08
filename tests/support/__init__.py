"""Helpers of the tests alone, one module per concern.

What the benchmark uses too is in ``harness``.
"""
