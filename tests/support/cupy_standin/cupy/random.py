"""Fake cupy.random (cupy stand-in): default_rng/Generator and the legacy functions, on NumPy."""
from _standin import rand as _rand
from _standin.names import install as _install

_install(__name__, _rand.TABLE, _rand.resolve)
