"""CuPy's real names (cupy_names.json) and the machinery that holds the stand-in to them.

Fake modules are `StrictModule`s: their namespace holds only names the real module has; a real
name the stand-in lacks raises AttributeError('cupy stand-in: <module>.<name> is not
implemented'), any other name a plain AttributeError. Fake classes get not-implemented
properties for the real names they lack, and keep private state in `hidden` slots, so that
`dir()` of every fake lists CuPy's names only.
"""
import json
import pathlib
import sys
import types

JSON = pathlib.Path(__file__).resolve().parent.parent / "cupy_names.json"
NAMES = json.loads(JSON.read_text())
MODULES = {name: frozenset(names) for name, names in NAMES["modules"].items()}
CLASSES = {name: frozenset(names) for name, names in NAMES["classes"].items()}
KEYWORDS = {name: (frozenset(entry["params"]), entry["var_kw"])
            for name, entry in NAMES["keywords"].items()}
CONSTANTS = NAMES["constants"]

_SPECS = {}  # module name -> (real names, fallback(name) -> object or LookupError: not implemented)


def not_implemented(qualname):
    """The AttributeError for a real CuPy name that the stand-in does not implement."""
    return AttributeError(f"cupy stand-in: {qualname} is not implemented")


class StrictModule(types.ModuleType):
    """A module whose missing attributes resolve only to real CuPy names."""

    def __getattr__(self, name):
        modname = self.__dict__["__name__"]
        allowed, fallback = _SPECS[modname]
        if name not in allowed:
            raise AttributeError(f"module '{modname}' has no attribute '{name}'")
        try:
            if fallback is None:
                raise LookupError(name)
            value = fallback(name)
        except LookupError:
            raise not_implemented(f"{modname}.{name}") from None
        self.__dict__[name] = value
        return value


def install(modname, table, fallback=None, names_of=None):
    """Turns sys.modules[modname] into a StrictModule holding exactly `table` (plus the module
    metadata the real module has); `fallback(name)` resolves other real names lazily.
    `names_of`: the json module whose names apply (default: modname).

    Called last in a fake module's file: it also removes the helpers the file imported
    (modules it imported under real names stay: its submodules, cupy.cuda.runtime ...)."""
    allowed = MODULES[names_of or modname]
    extra = sorted(set(table) - allowed)
    if extra:
        raise AssertionError(f"stand-in {modname} defines names CuPy lacks: {extra}")
    module = sys.modules[modname]
    namespace = module.__dict__
    for name, value in list(namespace.items()):
        if name not in allowed or not (name.startswith("__") or isinstance(value, types.ModuleType)):
            del namespace[name]
    namespace.update(table)
    module.__class__ = StrictModule
    _SPECS[modname] = (allowed, fallback)


def check_keywords(qualname, kwargs):
    """TypeError for a keyword argument the real CuPy callable `qualname` does not take."""
    entry = KEYWORDS.get(qualname)
    if entry is None or entry[1]:
        return
    for key in kwargs:
        if key not in entry[0]:
            raise TypeError(f"{qualname.rsplit('.', 1)[-1]}() got an unexpected keyword "
                            f"argument '{key}' (cupy stand-in: CuPy's {qualname} does not take it)")


def hidden(cls, slot):
    """Removes the descriptor of `slot` (one of cls.__slots__) from the class, so that dir()
    does not list it; returns its (get, set) functions, the only way left to reach it."""
    descriptor = cls.__dict__[slot]
    delattr(cls, slot)
    return descriptor.__get__, descriptor.__set__


def _placeholder(qualname):
    def missing(self):
        raise not_implemented(qualname)
    return property(missing, doc=f"Not implemented by the cupy stand-in: {qualname}")


def restrict(cls, key, module="cupy", instance_attrs=()):
    """Gives `cls` the identity of CuPy's class `key` (e.g. 'cupy.cuda.Stream'): its
    __module__, and a not-implemented property for every real non-dunder name it lacks
    (`instance_attrs`: real names its instances set themselves). Drops `__slots__` from the
    class namespace where CuPy's class (a Cython type) has none listed; `__module__` stays,
    as every Python class has it."""
    cls.__module__ = module
    if "__slots__" in cls.__dict__ and "__slots__" not in CLASSES[key]:
        delattr(cls, "__slots__")
    for name in CLASSES[key]:
        if not (name.startswith("__") or hasattr(cls, name) or name in instance_attrs):
            setattr(cls, name, _placeholder(f"{key}.{name}"))
    return cls
