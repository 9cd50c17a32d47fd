"""Text from a trained language model: the model a ``tgnn train --task lm``
run exported (``<out>/models/<run>.pt``: best weights, vocabulary,
configuration), rebuilt and sampled (``tgnn generate``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from ..data.corpus import CharVocabulary
from ..models import build_model
from ..models.language_model import CausalLanguageModel
from .config import RunConfig
from .io import load_checkpoint
from .runner import MODELS_DIR


class ModelFileError(ValueError):
    """A run folder without an exported language model."""


def find_model_file(run_dir: Union[str, Path]) -> Path:
    """The exported model of a language-model run folder: with several
    runs (seeds), the one of the lowest validation loss in its
    ``metrics.json`` (the first by name while the runs are unfinished).
    Raises :class:`ModelFileError` naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir}: no such run folder")
    files = sorted((run_dir / MODELS_DIR).glob("*.pt"))
    if not files:
        raise ModelFileError(
            f"{run_dir} has no trained language model ({MODELS_DIR}/*.pt); "
            f"train one with tgnn train --task lm --out {run_dir}")
    metrics = run_dir / "metrics.json"
    if len(files) > 1 and metrics.is_file():
        runs = json.loads(metrics.read_text()).get("runs", [])
        scored = [r for r in runs if r.get("val") is not None]
        if scored:
            best = min(scored, key=lambda r: r["val"])
            name = "-".join(f"{k}{v}" for k, v in best["run"].items())
            path = run_dir / MODELS_DIR / f"{name}.pt"
            if path.is_file():
                return path
    return files[0]


def load_language_model(path: Union[str, Path],
                        device: Union[str, torch.device] = "cpu"
                        ) -> Tuple[CausalLanguageModel, CharVocabulary,
                                   Dict[str, Any]]:
    """``(model, vocabulary, record)`` of an exported model file (see
    :func:`find_model_file`), the model in eval mode on ``device``;
    ``record`` holds the run's ``config``, ``epoch`` and ``val`` loss."""
    state = load_checkpoint(Path(path))
    if state.get("task") != "lm" or "model" not in state:
        raise ModelFileError(f"{path} is not an exported language model")
    config = RunConfig(state["config"])
    vocab = CharVocabulary(state["vocabulary"])
    model = build_model("lm", config.model_options(), len(vocab))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    record = {k: v for k, v in state.items() if k != "model"}
    return model, vocab, record


def generate_text(model: CausalLanguageModel, vocab: CharVocabulary,
                  prompt: str, max_new_tokens: int,
                  temperature: float = 1.0, top_k: Optional[int] = None,
                  seed: int = 0, cache: bool = True) -> str:
    """``prompt`` and its continuation by ``max_new_tokens`` characters
    (:meth:`CausalLanguageModel.generate`, sampling seeded with
    ``seed``).  A character outside the vocabulary raises a
    ``ValueError`` naming it and its position."""
    if not prompt:
        raise ValueError("prompt must hold at least one character (the "
                         "model continues a text)")
    ids = vocab.encode(prompt)[None].to(next(model.parameters()).device)
    generator = torch.Generator(device=ids.device).manual_seed(seed)
    out = model.generate(ids, max_new_tokens, temperature, top_k, cache,
                         generator=generator)
    return vocab.decode(out[0].cpu())


__all__ = ["ModelFileError", "find_model_file", "load_language_model",
           "generate_text"]
