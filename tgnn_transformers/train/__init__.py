"""Training loops, metrics, checkpoints (never imported by the layers)."""
from .config import resolve_config
from .loop import FitResult, Recipe, fit, seed_everything
from .runner import run_experiment

__all__ = ["resolve_config", "run_experiment", "fit", "Recipe", "FitResult",
           "seed_everything"]
