"""Cached subclasses for swapping a module's class in place (module.__class__ = ...).

Loraboard changes how some modules of a loaded model run (compiled decoder layers, 4-bit
layers dequantized in torch ops) by giving each instance a subclass of its own class:
the instance keeps its parameters, buffers, hooks and place in the model.
"""

from __future__ import annotations

from typing import Any

_SUBCLASSES: dict[tuple[type, str], type] = {}


def cached_subclass(base: type, prefix: str, mixin: type | None = None, **attributes: Any) -> type:
    """The subclass `prefix + base.__name__` of `base` with `attributes`, made once per (base, prefix).

    The attributes are set after the class is made, on purpose: transformers'
    GradientCheckpointingLayer wraps the forward of every new subclass in
    __init_subclass__ (transformers >= 5.2x), and a forward set here must stay bare.
    A `mixin` comes before `base` (its methods' super() reaches base's): for overrides
    written as a class of their own, such as a trainer's or an optimizer's.
    """
    key = (base, prefix)
    if key not in _SUBCLASSES:
        bases = (base,) if mixin is None else (mixin, base)
        cls = type(f"{prefix}{base.__name__}", bases, {"__module__": __name__})
        for name, value in attributes.items():
            setattr(cls, name, value)
        _SUBCLASSES[key] = cls
    return _SUBCLASSES[key]
