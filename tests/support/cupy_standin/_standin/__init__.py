"""The implementation of the CuPy stand-in (kept out of the fake `cupy` namespace, which may
expose real CuPy names only). Tests use it through `standin`."""
