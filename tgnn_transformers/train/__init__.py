"""Training loops, metrics, checkpoints (never imported by the layers)."""
from .config import resolve_config
from .folder import ResumeError, RunFolderError
from .loop import (FitResult, NonFiniteLossError, Recipe, fit,
                   seed_everything, track)
from .runner import run_experiment

__all__ = ["resolve_config", "run_experiment", "fit", "Recipe", "FitResult",
           "seed_everything", "track", "NonFiniteLossError",
           "RunFolderError", "ResumeError"]
