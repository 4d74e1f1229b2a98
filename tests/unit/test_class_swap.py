"""worker/training/class_swap.py: one cached subclass per (class, prefix), attributes left bare."""

from __future__ import annotations

from worker.training.class_swap import cached_subclass


class WrapsEveryForward:
    """Like transformers' GradientCheckpointingLayer: a new subclass's forward gets wrapped."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            inner = cls.forward
            cls.forward = lambda self: ("wrapped", inner(self))

    def forward(self):
        return "base"


def own_forward(self):
    return "own"


def test_the_attributes_stay_bare_and_each_prefix_makes_one_class() -> None:
    compiled = cached_subclass(WrapsEveryForward, "Compiled", forward=own_forward)
    assert compiled.__name__ == "CompiledWrapsEveryForward" and issubclass(compiled, WrapsEveryForward)
    instance = WrapsEveryForward()
    instance.__class__ = compiled
    assert instance.forward() == "own"  # not ("wrapped", "own")
    assert cached_subclass(WrapsEveryForward, "Compiled", forward=own_forward) is compiled
    assert cached_subclass(WrapsEveryForward, "Paired", forward=own_forward) is not compiled
