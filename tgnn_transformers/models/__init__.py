"""The model and task registries and the task models built from them.

``tgnn models`` prints the model registry; :func:`build_model` builds any
model with the task model of a task::

    from tgnn_transformers.models import build_model
    net = build_model("node", "gin-attention", 1433, 7, heads=4,
                      mlp_multiplier=2.0)
"""
from .registry import (MODELS, OPTIONS, ModelOptions, ModelSpec, Option,
                       get_model, model_names, models_table)
from .task_models import (ConvStack, GraphClassifier, LinkPredictor,
                          NodeClassifier, TextClassifier, TransformerStack,
                          build_encoder)
from .tasks import (TASKS, TaskSpec, build_model, check_model_task, get_task,
                    task_options)

__all__ = ["build_model", "build_encoder", "MODELS", "OPTIONS", "ModelSpec",
           "ModelOptions", "Option", "get_model", "model_names",
           "models_table", "TASKS", "TaskSpec", "get_task", "task_options",
           "check_model_task",
           "ConvStack", "TransformerStack", "NodeClassifier",
           "GraphClassifier", "LinkPredictor", "TextClassifier"]
