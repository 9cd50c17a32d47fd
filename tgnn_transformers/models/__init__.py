"""The model registry and the task models built from it.

``tgnn models`` prints the registry; :func:`build_model` builds any model
with the head of a task::

    from tgnn_transformers.models import build_model
    net = build_model("node", "gin-attention", 1433, 7, heads=4,
                      mlp_multiplier=2.0)
"""
from .heads import (TASK_HEADS, ConvStack, GraphClassifier, LinkPredictor,
                    NodeClassifier, TextClassifier, TransformerStack,
                    build_encoder,
                    build_model, task_options)
from .registry import (MODELS, OPTIONS, ModelSpec, Option, get_model,
                       model_names, models_table)

__all__ = ["build_model", "build_encoder", "MODELS", "OPTIONS", "ModelSpec",
           "Option", "get_model", "model_names", "models_table",
           "task_options", "TASK_HEADS", "ConvStack", "TransformerStack",
           "NodeClassifier", "GraphClassifier", "LinkPredictor",
           "TextClassifier"]
