"""The randomness a protocol machine takes from outside (``random.Random`` fits it).

mesh/core never imports :mod:`random`: the caller seeds and passes the generator, so a
simulation replays the same choices from the same seed.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Rng(Protocol):
    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...

    def choice(self, seq: Sequence[T]) -> T: ...

    def shuffle(self, x: MutableSequence[Any]) -> None: ...
