"""Compute kernels: pure functions on arrays. One package per algorithm, each with a readable
NumPy reference (``_ref``) that tests use as oracle and a compiled implementation."""
