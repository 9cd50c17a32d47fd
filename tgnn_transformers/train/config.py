"""Per-task, per-data-set hyper-parameters from the package's config file,
overridden by the command line."""
from __future__ import annotations

import json
from importlib import resources
from typing import Any, Dict, Optional

TASKS = ("node", "graph", "link")


def load_defaults(path: Optional[str] = None) -> Dict[str, Any]:
    if path is not None:
        with open(path) as f:
            return json.load(f)
    text = resources.files("tgnn_transformers.configs").joinpath(
        "defaults.json").read_text()
    return json.loads(text)


def resolve_config(task: str, dataset: str, model: str,
                   overrides: Optional[Dict[str, Any]] = None,
                   config_file: Optional[str] = None) -> Dict[str, Any]:
    """Task defaults <- model defaults <- data set (``*``, then the model)
    <- ``overrides`` (keys whose value is ``None`` are ignored)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of "
                         f"{', '.join(TASKS)}")
    table = load_defaults(config_file)[task]
    config: Dict[str, Any] = dict(table["defaults"])
    config.update(table.get("models", {}).get(model, {}))
    per_dataset = table.get("datasets", {}).get(dataset.lower(), {})
    config.update(per_dataset.get("*", {}))
    config.update(per_dataset.get(model, {}))
    config.update({k: v for k, v in (overrides or {}).items()
                   if v is not None})
    config.update(task=task, dataset=dataset.lower(), model=model)
    return config
