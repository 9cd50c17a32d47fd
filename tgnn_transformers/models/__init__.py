"""Task models: node, graph and link tasks from the package's layers."""
from .convs import ATTENTION_MODELS, BASELINE_MODELS, MODELS, build_conv
from .tasks import (ConvStack, GraphClassifier, LinkPredictor,
                    NodeClassifier, TransformerStack, build_encoder)

__all__ = ["MODELS", "ATTENTION_MODELS", "BASELINE_MODELS", "build_conv",
           "build_encoder", "ConvStack", "TransformerStack",
           "NodeClassifier", "GraphClassifier", "LinkPredictor"]
