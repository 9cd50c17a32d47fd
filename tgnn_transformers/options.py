"""Typed settings: what an option accepts, and checked values of many.

The model registry (:data:`~tgnn_transformers.models.OPTIONS`) and the
training recipes (:data:`~tgnn_transformers.train.config.RECIPE_OPTIONS`)
describe their options with :class:`Option`; the command line builds its
flags from them, and :func:`resolve_options` turns what a user gives into
a read-only :class:`OptionValues` (checked once, defaults filled in) that
flows down unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import (Any, Dict, Iterator, Mapping, Optional, Sequence,
                    Tuple)


@dataclass(frozen=True)
class Range:
    """A numeric interval; ``open_low`` / ``open_high`` exclude the ends."""
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        low = "(" if self.open_low or self.low == -math.inf else "["
        high = ")" if self.open_high or self.high == math.inf else "]"
        fmt = lambda v: "inf" if math.isinf(v) else f"{v:g}"  # noqa: E731
        return f"{low}{fmt(self.low)}, {fmt(self.high)}{high}"


POSITIVE = Range(0, open_low=True)
AT_LEAST_ONE = Range(1)
PROBABILITY = Range(0, 1, open_high=True)  # dropout: 1 would drop all


@dataclass(frozen=True)
class Option:
    """One typed setting: of a model, of a task head, or of a recipe."""
    name: str
    kind: type
    """``int``, ``float``, ``bool`` or ``str``"""
    default: Any
    help: str
    choices: Optional[Tuple[Any, ...]] = None
    range: Optional[Range] = None
    many: bool = False
    """a list of values (each checked) instead of one"""
    user: bool = True
    """settable by users (a ``tgnn train`` flag); ``False`` for what the
    training recipe derives from the data (``edge_dim``, ``delta``)"""
    unique: bool = False
    """(with ``many``) the values name a set: a repeated one is refused
    (``--seeds 0 0`` would count one run twice)"""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """What the option accepts, for messages and tables."""
        if self.choices is not None:
            accepted = " | ".join("none" if c is None else str(c)
                                  for c in self.choices)
        else:
            accepted = self.kind.__name__
            if self.range is not None:
                accepted += f" in {self.range}"
        return f"list of {accepted}" if self.many else accepted

    def check(self, value: Any, owner: str) -> Any:
        """Returns ``value`` checked (ints accepted as floats, lists as
        tuples); raises a ``ValueError``/``TypeError`` naming the option,
        ``owner`` (e.g. "model 'mha'"), what is accepted and what came."""
        if self.many:
            if isinstance(value, (str, bytes)) or not isinstance(
                    value, (list, tuple)):
                raise TypeError(f"option {self.name!r} of {owner} expects a "
                                f"{self.describe()}, got {value!r}")
            if not value:
                raise ValueError(f"option {self.name!r} of {owner} needs at "
                                 f"least one value, got an empty list")
            values = tuple(self._check_one(v, owner) for v in value)
            if self.unique and len(set(values)) < len(values):
                repeated = sorted({v for v in values if values.count(v) > 1},
                                  key=str)
                raise ValueError(
                    f"option {self.name!r} of {owner} repeats "
                    f"{', '.join(map(repr, repeated))}: each value counts "
                    f"once, got {list(value)}")
            return values
        return self._check_one(value, owner)

    def _check_one(self, value: Any, owner: str) -> Any:
        def fail(error=ValueError):
            raise error(f"option {self.name!r} of {owner} expects "
                        f"{self.describe()}, got {value!r}")
        if value is None:
            if self.default is None or (self.choices is not None and
                                        None in self.choices):
                return None
            fail(TypeError)
        if self.kind is bool:
            if not isinstance(value, bool):
                fail(TypeError)
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                fail(TypeError)
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail(TypeError)
            value = float(value)
            if not math.isfinite(value):
                fail()
        elif not isinstance(value, self.kind):
            fail(TypeError)
        if self.choices is not None and value not in self.choices:
            fail()
        if self.range is not None and value not in self.range:
            fail()
        return value


def check_options(options: Mapping[str, Any], table: Mapping[str, Option],
                  accepted: Sequence[str], owner: str) -> Dict[str, Any]:
    """Checks every value of ``options`` (by its :class:`Option` in
    ``table``) and that each name is in ``accepted``; raises a
    ``ValueError`` naming the option, ``owner`` and what it takes."""
    out = {}
    for name, value in options.items():
        if name not in accepted:
            raise ValueError(
                f"{owner} does not take option {name!r}; it takes "
                f"{', '.join(sorted(accepted)) or 'no options'}")
        out[name] = table[name].check(value, owner)
    return out


def resolve_options(options: Mapping[str, Any], table: Mapping[str, Option],
                    accepted: Sequence[str], owner: str,
                    defaults: Mapping[str, Any] = {}) -> Dict[str, Any]:
    """:func:`check_options`, then the default of every accepted option
    that was not given: the owner's own (``defaults``, e.g. a model whose
    ``norm`` defaults to another value than the table's), else the
    table's."""
    out = check_options(options, table, accepted, owner)
    for name in accepted:
        out.setdefault(name, defaults.get(name, table[name].default))
    return out


class OptionValues(Mapping):
    """Checked option values, read-only: made once where options enter
    (the command line, :func:`~tgnn_transformers.models.build_model`) and
    handed down unchanged.  A ``Mapping``, so ``values["hidden"]``,
    ``dict(values)`` and ``**values`` work."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"
