"""Fake cupy_backends package (cupy stand-in)."""
