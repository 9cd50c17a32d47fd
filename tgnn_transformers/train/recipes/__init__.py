"""Training recipes, one module per task (the task registry,
:data:`tgnn_transformers.models.TASKS`, names each task's module).

A recipe module defines ``load(config, root, mirror)`` (the data set),
``runs(config)`` (the runs: one per seed, fold or split) and
``build(dataset, config, run)`` (a :class:`~tgnn_transformers.train.Recipe`:
model, optimizer, one epoch of training, evaluation); it may define
``check_config(config, explicit)``, run before any data loads.  The names
below are the recipes' building blocks, for scripts and notebooks.
"""
from .common import (lr_factor, minibatch_recipe, roc_auc, shard_loader,
                     scheduled_optimizer, text_optimizer)
from .finetune import finetune_recipe
from .graph import graph_recipe, stratified_folds
from .link import _pairs_with_negatives, link_recipe  # noqa: F401
from .lm import gpt_optimizer, learning_rate, lm_recipe
from .node import (neighbor_hops, node_recipe, node_splits,
                   prepare_node_data)
from .text import text_graphs, text_pattern, text_pooling, text_recipe

__all__ = ["node_recipe", "node_splits", "prepare_node_data",
           "neighbor_hops", "graph_recipe", "stratified_folds",
           "link_recipe", "roc_auc", "text_recipe", "text_graphs",
           "text_pattern", "text_pooling", "finetune_recipe", "lr_factor",
           "text_optimizer", "scheduled_optimizer", "shard_loader",
           "minibatch_recipe", "lm_recipe", "gpt_optimizer", "learning_rate"]
