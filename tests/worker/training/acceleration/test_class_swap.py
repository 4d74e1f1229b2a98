"""acceleration/class_swap.py: one cached subclass per (class, prefix), attributes left bare."""

from __future__ import annotations

from worker.training.acceleration.class_swap import cached_subclass


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


class Greeter:
    def greet(self) -> str:
        return "hello"


class Louder:
    """A mixin: its super() is the class it is mixed into."""

    def greet(self) -> str:
        return super().greet().upper()  # type: ignore[misc]


def test_a_mixin_comes_before_the_base_and_reaches_it_through_super() -> None:
    loud = cached_subclass(Greeter, "Louder", mixin=Louder)
    assert loud.__name__ == "LouderGreeter" and loud.__mro__[1:3] == (Louder, Greeter)
    instance = Greeter()
    instance.__class__ = loud
    assert instance.greet() == "HELLO" and isinstance(instance, Louder)
    assert cached_subclass(Greeter, "Louder", mixin=Louder) is loud
