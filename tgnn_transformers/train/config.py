"""A run's configuration: the training recipe's options (typed like the
model options of the registry), the packaged per-task and per-data-set
defaults, and the command line's overrides, merged and checked.
"""
from __future__ import annotations

import importlib
import json
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..data import dataset_key
from ..models import (OPTIONS, ModelOptions, check_model_task, get_model,
                      get_task)
from ..options import (AT_LEAST_ONE, POSITIVE, Option, OptionValues, Range)

_FRACTION = Range(0, 1, open_low=True, open_high=True)

#: The training recipes' own options (not the model's), by name.
RECIPE_OPTIONS: Dict[str, Option] = {o.name: o for o in (
    Option("epochs", int, 200, "maximum number of epochs",
           range=AT_LEAST_ONE),
    Option("patience", int, 100,
           "early stopping: epochs (lm task: evaluations) without "
           "validation gain", range=AT_LEAST_ONE),
    Option("lr", float, 0.005, "learning rate (Adam)", range=POSITIVE),
    Option("weight_decay", float, 0.0, "L2 weight decay", range=Range(0)),
    Option("seeds", int, (0, ), "random seeds: one run each (per split or "
           "fold)", many=True, range=Range(0), unique=True),
    Option("splits", int, None, "node task: which train/val/test splits "
           "of the data set to run, by index: its fixed splits "
           "(Minesweeper, Tolokers: 0-9), or the seeds of random 50/25/25 "
           "splits (LINKX graphs: 5); default all of them (one for "
           "Planetoid and OGB)", many=True, range=Range(0), unique=True),
    Option("folds", int, 10, "cross-validation folds (graph task)",
           range=Range(2)),
    Option("batch_size", int, 32, "graphs (graph task), sentences (text "
           "tasks), blocks of block_size tokens (lm task) or seed nodes (node"
           " task with --num-neighbors) per batch", range=AT_LEAST_ONE),
    Option("num_neighbors", int, None, "node task: train on neighbour-"
           "sampled mini-batches (PyG NeighborLoader) with this many "
           "neighbours per layer (one value for every layer; -1: all)",
           many=True, range=Range(-1)),
    Option("self_loops", bool, True, "add the missing self-loops"),
    Option("normalize_features", bool, False,
           "row-normalise node features (node task)"),
    Option("sparse_features", bool, True,
           "keep sparse node features as a CSR tensor (node task)"),
    Option("edge_features", bool, True,
           "attend with the data set's edge features (graph task, e.g. "
           "MUTAG bond types)"),
    Option("val_ratio", float, 0.05, "share of edges for validation (link "
           "task)", range=_FRACTION),
    Option("test_ratio", float, 0.1, "share of edges for testing (link "
           "task)", range=_FRACTION),
    Option("checkpoint_every", int, 1, "epochs (lm task: evaluations) "
           "between checkpoints", range=AT_LEAST_ONE),
    Option("device", str, "auto", "where to train: auto (CUDA when "
           "available, else CPU), cpu, cuda or cuda:N"),
    Option("precision", str, "fp32", "fp32; bf16 or fp16 autocast (fp16 "
           "with a gradient scaler, CUDA only)",
           choices=("fp32", "bf16", "fp16")),
    # text and lm tasks
    Option("optimizer", str, "adamw", "text and lm tasks: Adam (L2 weight "
           "decay) or AdamW (decoupled; text: not on biases, norms and "
           "embeddings; lm: on every weight matrix and embedding, as "
           "nanoGPT)", choices=("adam", "adamw")),
    Option("warmup", float, 0.0, "text and lm tasks: share of the training "
           "steps with a linear learning-rate warm-up",
           range=Range(0, 1, open_high=True)),
    Option("schedule", str, "linear", "text and lm tasks: learning-rate "
           "decay after the warm-up (text: to 0, lm: to min_lr)",
           choices=("constant", "linear", "cosine")),
    Option("clip_grad", float, 0.0, "text and lm tasks: clip the gradient "
           "norm to this (0: no clipping)", range=Range(0)),
    Option("label_smoothing", float, 0.0, "text and lm tasks: label "
           "smoothing of the training loss", range=Range(0, 1,
                                                         open_high=True)),
    Option("beta2", float, 0.999, "lm task: Adam's second-moment decay "
           "(nanoGPT's Shakespeare runs: 0.99)", range=Range(0, 1,
                                                             open_high=True)),
    Option("max_length", int, 128, "text task: tokens kept per sentence "
           "([CLS] included)", range=Range(2, 512)),
    Option("min_freq", int, 1, "text task: minimum count of a word in the "
           "training split to enter the vocabulary", range=AT_LEAST_ONE),
    # lm task
    Option("max_iters", int, 2000, "lm task: optimizer steps, each on "
           "batch_size random blocks", range=AT_LEAST_ONE),
    Option("eval_interval", int, 250, "lm task: steps between two "
           "estimates of the train and val loss (one epoch of the shared "
           "loop: history, patience, checkpoints)", range=AT_LEAST_ONE),
    Option("eval_iters", int, 20, "lm task: batches of each split per loss "
           "estimate", range=AT_LEAST_ONE),
    Option("min_lr", float, 1e-4, "lm task: the learning rate the decay "
           "ends at", range=Range(0)),
)}



class ConfigurationError(ValueError):
    """A configuration that does not fit the loaded data (found after
    loading, before any training)."""


class RunConfig(OptionValues):
    """A run's configuration, every value checked (what
    :func:`resolve_config` returns): a read-only ``Mapping`` of JSON values
    (it is what ``run.json`` records), plus the model options it holds."""

    @property
    def task(self) -> str:
        return self["task"]

    def model_options(self, **derived) -> ModelOptions:
        """The model's and its task model's head options, plus the values
        the recipe derives from the data (``edge_dim``, ``delta``) where
        the model takes them (checked here; the rest was checked when the
        configuration was resolved)."""
        spec = get_model(self["model"])
        accepted = spec.accepted(self)
        values = {k: self[k] for k in accepted if k in self}
        owner = f"model {spec.name!r} (derived from the data)"
        for name, value in derived.items():
            if name in accepted:
                values[name] = OPTIONS[name].check(value, owner)
        for name in accepted:
            values.setdefault(name, spec.default(name))
        head = get_task(self.task).head_options
        return ModelOptions(spec.name, values,
                            {k: self[k] for k in head if k in self})


def load_defaults(path: Optional[str] = None) -> Dict[str, Any]:
    """The per-task and per-data-set defaults: the packaged
    ``defaults.json``, or the file at ``path`` (same shape; a
    ``ValueError`` names the file and what is wrong with it)."""
    if path is None:
        text = resources.files(__package__).joinpath(
            "defaults.json").read_text()
        return json.loads(text)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not UTF-8 text; expected a JSON "
                         "file") from None
    except OSError as exc:
        raise ValueError(f"--config {path}: cannot read it "
                         f"({exc.strerror or exc})") from None
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--config {path}: not valid JSON ({exc})") \
            from None
    check_defaults_shape(table, f"--config {path}")
    return table


#: The shape of a defaults file, for messages.
DEFAULTS_SHAPE = ('{"<task>": {"defaults": {option: value}, "models": '
                  '{model: {option: value}}, "datasets": {dataset: {"*" or '
                  'model: {option: value}}}}}')


def check_defaults_shape(table: Any, source: str) -> None:
    """Raises a ``ValueError`` naming ``source`` and the place where
    ``table`` departs from :data:`DEFAULTS_SHAPE`."""
    def expect_object(value, where):
        if not isinstance(value, dict):
            raise ValueError(f"{source}: {where} must be a JSON object, got "
                             f"{type(value).__name__} {_short(value)}; the "
                             f"file's shape is {DEFAULTS_SHAPE}")

    expect_object(table, "the file")
    for task, section in table.items():
        expect_object(section, f"{task!r}")
        unknown = sorted(set(section) - {"defaults", "models", "datasets"})
        if unknown:
            raise ValueError(f"{source}: {task!r} has unknown key(s) "
                             f"{', '.join(map(repr, unknown))}; a task "
                             "section holds defaults, models and datasets")
        expect_object(section.get("defaults", {}), f"{task}.defaults")
        models = section.get("models", {})
        expect_object(models, f"{task}.models")
        for model, options in models.items():
            expect_object(options, f"{task}.models.{model}")
        datasets = section.get("datasets", {})
        expect_object(datasets, f"{task}.datasets")
        for name, entries in datasets.items():
            expect_object(entries, f"{task}.datasets.{name}")
            for key, options in entries.items():
                expect_object(options, f"{task}.datasets.{name}.{key}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def resolve_config(task: str, dataset: str, model: str,
                   overrides: Optional[Dict[str, Any]] = None,
                   config_file: Optional[str] = None,
                   preset: Optional[str] = None) -> RunConfig:
    """The full configuration of one run, every value checked.

    Layers, later ones winning: the registry's and the recipe's defaults,
    the config file's task ``defaults``, its ``models.<model>`` entry, its
    ``datasets.<dataset>."*"`` and ``datasets.<dataset>.<model>`` entries,
    the model's ``preset`` (a named option set of the registry, e.g.
    ``"paper"``; see :meth:`~tgnn_transformers.models.ModelSpec.preset`),
    then ``overrides`` (keys whose value is ``None`` are ignored), so an
    explicit option overrides the preset.  The
    shared layers (``defaults`` and ``"*"``) may set options that only some
    models take; anywhere else an option the model or task does not take
    raises a ``ValueError`` that names it and where it came from.
    """
    task_spec = get_task(task)
    spec = get_model(model)
    dataset = dataset_key(dataset)
    check_model_task(model, task)
    task_spec.check_dataset(dataset)
    source = config_file or "the packaged defaults.json"
    table = load_defaults(config_file)
    if task not in table:
        raise ValueError(f"{source} has no section for task {task!r}")
    table = table[task]
    per_dataset = table.get("datasets", {}).get(dataset, {})
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    preset_options: Dict[str, Any] = {}
    if preset is not None:
        # A graph transformer's preset depends on its attention conv.
        chosen = {**table.get("defaults", {}),
                  **table.get("models", {}).get(model, {}),
                  **per_dataset.get("*", {}), **per_dataset.get(model, {}),
                  **given}
        preset_options = spec.preset(preset, chosen)
    layers: List[Tuple[str, Dict[str, Any], bool]] = [
        (f"{source}: {task}.defaults", table.get("defaults", {}), False),
        (f"{source}: {task}.models.{model}",
         table.get("models", {}).get(model, {}), True),
        (f"{source}: {task}.datasets.{dataset}.*", per_dataset.get("*", {}),
         False),
        (f"{source}: {task}.datasets.{dataset}.{model}",
         per_dataset.get(model, {}), True),
        (f"preset {preset!r} of model {model!r}", preset_options, True),
        ("the command line", given, True),
    ]
    own = task_spec.options + task_spec.head_options
    merged: Dict[str, Any] = {}
    origin: Dict[str, Tuple[str, bool]] = {}
    for where, entries, strict in layers:
        for key, value in entries.items():
            if key not in OPTIONS and key not in RECIPE_OPTIONS:
                raise ValueError(f"{where}: unknown option {key!r}")
            merged[key] = value
            origin[key] = (where, strict)
    accepted = spec.accepted(merged)
    config: Dict[str, Any] = {}
    model_given: Dict[str, Any] = {}
    for key, value in merged.items():
        where, strict = origin[key]
        if key in own:
            option = RECIPE_OPTIONS.get(key) or OPTIONS[key]
            config[key] = option.check(value, f"the {task} task ({where})")
        elif key in accepted:
            model_given[key] = value
        elif strict:
            takes = ", ".join(sorted(set(own) | set(accepted)))
            raise ValueError(f"{where}: option {key!r} does not apply to "
                             f"model {model!r} on the {task} task; it takes "
                             f"{takes}")
    # A name both the model and the task's head take (the text task's
    # norm and ffn_multiplier) has one value in a run: the task's.
    model_values = {k: v for k, v in spec.resolve(model_given).items()
                    if OPTIONS[k].user and k not in own}
    for name in own:
        option = RECIPE_OPTIONS.get(name) or OPTIONS[name]
        config.setdefault(name, task_spec.head_defaults.get(name,
                                                            option.default))
    config.update(model_values)
    config = {k: list(v) if isinstance(v, tuple) else v
              for k, v in config.items()}  # JSON-friendly
    config.update(task=task, dataset=dataset, model=model)
    explicit = {key: where for key, (where, strict) in origin.items()
                if strict}
    check = getattr(recipe_module(task_spec), "check_config", None)
    if check is not None:
        check(config, explicit)
    if preset is not None:
        config["preset"] = preset
    # Optional packages the run needs: named before any data loads.
    from ..extras import check_features
    check_features(config)
    if "device" in config:
        # --device cuda without CUDA, fp16 on the CPU: errors before any
        # data is loaded.
        from .device import Precision, resolve_device
        Precision(config["precision"], resolve_device(config["device"]))
    return RunConfig(config)


def recipe_module(task):
    """The recipe module of a task (a :class:`TaskSpec` or its name):
    ``tgnn_transformers.train.recipes.<spec.recipe>``, which defines
    ``load(config, root, mirror)``, ``runs(config)`` and
    ``build(dataset, config, run)`` (and may define
    ``check_config(config, explicit)``, run before any data loads)."""
    spec = get_task(task) if isinstance(task, str) else task
    return importlib.import_module(f"{__package__}.recipes.{spec.recipe}")


def model_options(config: Mapping[str, Any], **derived) -> ModelOptions:
    """:meth:`RunConfig.model_options` of a run's ``config``."""
    if not isinstance(config, RunConfig):
        config = RunConfig(config)
    return config.model_options(**derived)
