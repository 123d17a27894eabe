"""A strict, NumPy-backed CuPy stand-in (see standin.py). This file makes the directory a
package, so that pytest imports test_standin.py without putting the fake `cupy` on sys.path."""
