"""The task registry: every task the package trains, in one table beside
the model registry.

A :class:`TaskSpec` says what a task trains on (its kind of data set), how
it is scored (metric and direction), which task model it builds around a
registry model (and that model's head options), which training recipe
runs it (a module of :mod:`tgnn_transformers.train.recipes`, named here,
imported by the training code) and which training options it takes.  The
command line, the configuration, :func:`build_model` and the runner read
it; adding a task is one :class:`TaskSpec` here and one recipe module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch

from ..adapters.classifier import PretrainedClassifier
from ..data import check_dataset, datasets_of
from ..functional._checks import check_choice
from .language_model import HEAD_OPTIONS as LM_HEAD_OPTIONS
from .language_model import CausalLanguageModel
from .registry import ModelOptions, get_model
from .task_models import (GraphClassifier, LinkPredictor, NodeClassifier,
                          TextClassifier)

TaskModelFactory = Callable[[ModelOptions, Any, Optional[int]],
                            torch.nn.Module]


@dataclass(frozen=True)
class TaskSpec:
    """A task name and everything the package needs to train it."""
    name: str
    summary: str
    data: str
    """the kind of data set it trains on (see
    :func:`tgnn_transformers.data.datasets_of`)"""
    make: TaskModelFactory
    """``make(options, in_channels, num_classes)``: the task model around a
    registry model (``options`` resolved with :attr:`head_options`)"""
    recipe: str
    """its recipe module, ``tgnn_transformers.train.recipes.<recipe>``"""
    options: Tuple[str, ...]
    """the training options it takes (``train.config.RECIPE_OPTIONS``)"""
    head_options: Tuple[str, ...] = ()
    """the task model's own options (``models.OPTIONS``)"""
    head_defaults: Mapping[str, Any] = field(default_factory=dict,
                                             hash=False, compare=False)
    """defaults of head options that differ from the option's own for this
    task (the language model's ``pattern`` is ``causal``, not the text
    task's ``full``)"""
    metric: str = "accuracy"
    higher_is_better: bool = True
    classes: bool = True
    """its model needs ``num_classes``"""
    distributed: bool = True
    """runs under ``torchrun`` (one shard of the data per process)"""

    def datasets(self) -> Tuple[str, ...]:
        """The data sets it trains on."""
        return datasets_of(self.data)

    def check_dataset(self, name: str) -> None:
        """Raises a ``ValueError`` naming the data sets of this task when
        ``name`` is not one of them."""
        check_dataset(self.data, name, f"the {self.name} task")


def _pretrained(options: ModelOptions, in_channels, num_classes):
    return PretrainedClassifier(options.model, in_channels, num_classes,
                                **options, **options.head)


def _language_model(options: ModelOptions, vocab_size, num_classes=None):
    return CausalLanguageModel.from_options(options, vocab_size)


def _task_model(cls):
    def make(options: ModelOptions, in_channels, num_classes=None):
        if num_classes is None:
            return cls(options, in_channels)
        return cls(options, in_channels, num_classes)
    return make


_COMMON = ("epochs", "patience", "lr", "weight_decay", "seeds",
           "checkpoint_every", "device", "precision")
_SCHEDULE = ("batch_size", "optimizer", "warmup", "schedule", "clip_grad",
             "label_smoothing", "max_length")

#: Every task, by name.
TASKS: Dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("node", "node classification", "node",
             _task_model(NodeClassifier), "node",
             _COMMON + ("splits", "self_loops", "normalize_features",
                        "sparse_features", "batch_size", "num_neighbors"),
             head_options=NodeClassifier.HEAD_OPTIONS),
    TaskSpec("graph", "graph classification", "graph",
             _task_model(GraphClassifier), "graph",
             _COMMON + ("self_loops", "folds", "batch_size",
                        "edge_features"),
             head_options=GraphClassifier.HEAD_OPTIONS),
    TaskSpec("link", "link prediction", "node",
             _task_model(LinkPredictor), "link",
             _COMMON + ("self_loops", "val_ratio", "test_ratio"),
             head_options=LinkPredictor.HEAD_OPTIONS, metric="roc_auc",
             classes=False, distributed=False),
    TaskSpec("text", "text classification", "text",
             _task_model(TextClassifier), "text",
             _COMMON + _SCHEDULE + ("pattern", "window", "min_freq"),
             head_options=TextClassifier.HEAD_OPTIONS),
    TaskSpec("finetune", "fine-tuning a pretrained encoder", "text",
             _pretrained, "finetune", _COMMON + _SCHEDULE,
             head_options=PretrainedClassifier.HEAD_OPTIONS),
    # An "epoch" of the shared loop is one evaluation interval: the recipe
    # derives ``epochs`` from max_iters and eval_interval.
    TaskSpec("lm", "causal language modelling (next character)", "corpus",
             _language_model, "lm",
             tuple(o for o in _COMMON if o != "epochs")
             + ("batch_size", "optimizer", "warmup", "schedule", "clip_grad",
                "label_smoothing", "beta2", "max_iters", "eval_interval",
                "eval_iters", "min_lr"),
             head_options=LM_HEAD_OPTIONS,
             head_defaults={"pattern": "causal", "pos": "learned",
                            "ffn_multiplier": 4.0, "bias": False},
             metric="loss", higher_is_better=False, classes=False,
             distributed=False),
)}


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``; a ``ValueError`` lists the known ones."""
    return TASKS[check_choice("task", name, TASKS)]


def check_model_task(model: str, task: str) -> None:
    """Raises a ``ValueError`` unless registry model ``model`` runs on
    ``task``, naming the tasks it runs on and the models the task runs."""
    spec = get_model(model)
    if task not in spec.tasks:
        from .registry import MODELS
        runs = ", ".join(n for n, s in MODELS.items() if task in s.tasks)
        raise ValueError(f"model {model!r} runs on the "
                         f"{' or '.join(spec.tasks)} task, not {task!r} "
                         f"(the {task} task runs {runs})")


def task_options(task: str) -> Tuple[str, ...]:
    """The option names a task's model head takes on top of the model's."""
    return get_task(task).head_options


def build_model(task: str, model: Union[str, ModelOptions],
                in_channels: Optional[int],
                num_classes: Optional[int] = None,
                **options) -> torch.nn.Module:
    """Builds registry model ``model`` with the task model of ``task``
    (``"node"``, ``"graph"``, ``"link"``, ``"text"``, ``"finetune"`` or
    ``"lm"``; for ``"text"`` and ``"lm"`` ``in_channels`` is the
    vocabulary size, for ``"finetune"`` (pretrained models) it is unused;
    ``"lm"`` builds a
    :class:`~tgnn_transformers.models.language_model.CausalLanguageModel`
    and takes no ``num_classes``).

    ``options`` are the model's options (``tgnn models`` lists them) and the
    task model's head options (``pe``, ``pe_dim``, ``pe_mode`` for nodes
    and graphs, ``pool``, ``readout`` for graphs, ``decoder`` for links,
    ``pos``, ``pooling``, ``ffn_multiplier``, ``norm`` for text;
    ``block_size``, ``pos``, ``pattern``, ``window``, ``ffn_multiplier``,
    ``norm``, ``bias`` for lm), checked once here; one the model does not
    take, or
    a value out of range, raises a ``ValueError`` naming the option, the
    model and what it accepts.  ``model`` may instead be the
    :class:`~tgnn_transformers.models.ModelOptions` of a resolved
    configuration (``RunConfig.model_options()``), used as it is.
    """
    spec = get_task(task)
    if isinstance(model, ModelOptions):
        if options:
            raise TypeError("build_model got resolved ModelOptions and "
                            f"keyword options {', '.join(sorted(options))}")
        options, model = model, model.model
    check_model_task(model, task)
    model_spec = get_model(model)
    if not spec.classes and num_classes is not None:
        raise ValueError(f"the {task} task has no classes ({spec.summary})"
                         f": num_classes must be None, got {num_classes}")
    if spec.classes and (not isinstance(num_classes, int) or
                         isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"the {task} task needs num_classes >= 1, got "
                         f"{num_classes!r}")
    if not isinstance(options, ModelOptions):
        # Resolved options already hold the task's head values.
        options = {**spec.head_defaults, **options}
    resolved = model_spec.resolve(options, spec.head_options, task)
    return spec.make(resolved, in_channels, num_classes)


__all__ = ["TaskSpec", "TASKS", "get_task", "task_options", "build_model",
           "check_model_task"]
