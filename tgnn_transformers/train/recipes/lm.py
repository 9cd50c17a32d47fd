r"""Causal language modelling on a character corpus (Tiny Shakespeare or
any text file), in the shape of nanoGPT's ``train.py``.

Every step draws ``batch_size`` random blocks of ``block_size`` characters
of the training split (:meth:`~tgnn_transformers.data.corpus.CharCorpus.
batch`, from torch's global generator, which checkpoints save and
restore) and takes one AdamW step on the mean next-character
cross-entropy, with gradient clipping.  The learning rate at step
:math:`t` of :math:`T` (``max_iters``), with :math:`W` warm-up steps
(``warmup`` :math:`\times T`), is nanoGPT's ``get_lr``:

.. math::
    \eta_t = \begin{cases}
      \eta\,\frac{t + 1}{W + 1} & t < W \\
      \eta_{\min} + d\big(\tfrac{t - W}{T - W}\big)\,(\eta - \eta_{\min})
      & t \ge W
    \end{cases}

with :math:`d(p) = \tfrac12(1 + \cos \pi p)` (``schedule`` cosine),
:math:`1 - p` (linear) or :math:`1` (constant).  AdamW decays every
parameter of two or more dimensions (weight matrices, embeddings, the
tied head) and no bias, norm gain or scalar (nanoGPT's rule; biases and
the norm modules' parameters are never decayed, whatever their shape:
the per-head layers of GIN- and PNA-Attention keep ``[H, C]`` ones).

One "epoch" of the shared loop (:func:`~tgnn_transformers.train.fit`) is
one evaluation interval: ``eval_interval`` steps, then estimates of the
train and validation loss over ``eval_iters`` batches of each split, drawn
from a generator seeded with the run's seed (the same batches at every
evaluation, so the curves compare like with like).  So history, progress,
checkpoints, exact resume and early stopping (``patience`` evaluations)
work as for every task; the metric is the validation loss, lower better.
The best model's weights and the vocabulary are exported to
``<out>/models/<run>.pt`` for ``tgnn generate``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping

import torch
import torch.nn.functional as F

from ...data import TEXT_FILE_PREFIX, DataSourceError
from ...data.corpus import CharCorpus, load_corpus
from ...models import build_model
from ...models.language_model import check_head_options
from ..config import model_options
from ..device import run_setup
from ..loop import Recipe, track
from .common import seed_runs

runs = seed_runs

#: Seed offset of the evaluation batches (apart from the training ones).
EVAL_SEED = 1_000_003


def check_config(config: Dict[str, Any], explicit: Dict[str, str]) -> None:
    """Before any data loads: a causal pattern (with a window where it
    needs one), a position encoding and norm the language model has, and
    ``epochs`` derived as the number of evaluations."""
    check_head_options(config)
    config["epochs"] = math.ceil(config["max_iters"] /
                                 config["eval_interval"])


def load(config: Mapping[str, Any], root=None, mirror=None) -> CharCorpus:
    name = config["dataset"]
    if name.startswith(TEXT_FILE_PREFIX):
        name = name[len(TEXT_FILE_PREFIX):]
    return load_corpus(name, root=root, mirror=mirror)


def build(corpus: CharCorpus, config: Mapping[str, Any],
          run: Dict[str, int]) -> Recipe:
    return lm_recipe(corpus, config, run["seed"])


def learning_rate(step: int, config: Mapping[str, Any]) -> float:
    """nanoGPT's ``get_lr`` at optimizer step ``step`` (0-based; see the
    module docstring), decaying over ``max_iters`` steps."""
    lr, floor = config["lr"], config["min_lr"]
    total = config["max_iters"]
    warm = int(round(config["warmup"] * total))
    if step < warm:
        return lr * (step + 1) / (warm + 1)
    if step > total or config["schedule"] == "constant":
        return floor if step > total else lr
    progress = (step - warm) / max(1, total - warm)
    decay = (0.5 * (1.0 + math.cos(math.pi * progress))
             if config["schedule"] == "cosine" else 1.0 - progress)
    return floor + decay * (lr - floor)


def gpt_optimizer(model: torch.nn.Module, config: Mapping[str, Any]
                  ) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay on every parameter of two or more
    dimensions but the norms' (nanoGPT's ``configure_optimizers``), betas
    ``(0.9, beta2)``; or Adam with L2 decay on everything."""
    betas = (0.9, config["beta2"])
    if config["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=config["lr"],
                                betas=betas,
                                weight_decay=config["weight_decay"])
    norms = {id(p) for m in model.modules() if _is_norm(m)
             for p in m.parameters(recurse=False)}
    decay: List[torch.nn.Parameter] = []
    rest: List[torch.nn.Parameter] = []
    for name, p in model.named_parameters():  # a tied parameter once
        if p.requires_grad:
            (decay if decayed(name, p, norms) else rest).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config["weight_decay"]},
         {"params": rest, "weight_decay": 0.0}], lr=config["lr"],
        betas=betas)


def decayed(name: str, param: torch.nn.Parameter, norms) -> bool:
    """nanoGPT's rule: weight matrices and embeddings (two or more
    dimensions) are decayed; biases, norm gains and scalars are not.  Our
    per-head layers keep ``[H, C]`` biases and norm gains, which are
    biases and gains all the same (``norms``: ids of the norm modules'
    parameters)."""
    return param.dim() >= 2 and id(param) not in norms and \
        name.rsplit(".", 1)[-1] != "bias"


def _is_norm(module: torch.nn.Module) -> bool:
    # torch's norms and the per-head ones (HeadwiseLayerNorm, ...)
    return "Norm" in type(module).__name__


def lm_recipe(corpus: CharCorpus, config: Mapping[str, Any],
              seed: int = 0) -> Recipe:
    """The language model of ``config`` on ``corpus`` (see the module
    docstring)."""
    block, batch_size = config["block_size"], config["batch_size"]
    for split in ("train", "val"):
        size = corpus.split(split).numel()
        if size <= block:
            raise DataSourceError(
                f"the {split} split of {corpus.source} has {size} "
                f"characters; block_size={block} needs at least {block + 1}"
                " (a block and its next character): use a longer text or "
                "a smaller --block-size")
    device, precision = run_setup(config)
    model = build_model("lm", model_options(config),
                        corpus.vocab_size).to(device)
    optimizer = gpt_optimizer(model, config)
    base_lr = config["lr"]
    # The scheduler's step count is the optimizer step, so a resumed run
    # (which restores the scheduler) continues where it stopped.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(step, config) / base_lr)
    trainable = [p for p in model.parameters() if p.requires_grad]
    total, interval = config["max_iters"], config["eval_interval"]
    smoothing, clip = config["label_smoothing"], config["clip_grad"]

    def train_epoch() -> float:
        model.train()
        step = scheduler.last_epoch
        steps = min(interval, total - step)
        losses = []
        # one progress tick per step: an evaluation interval can be minutes
        for _ in track(range(steps), "train"):
            x, y = corpus.batch("train", batch_size, block, device=device)
            with precision.autocast():
                logits, _ = model(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)),
                                   y.reshape(-1), label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            precision.step(loss, optimizer, clip_grad=clip,
                           parameters=trainable)
            scheduler.step()
            losses.append(loss.detach())
        return float(torch.stack(losses).mean()) if losses else math.nan

    @torch.no_grad()
    def estimate(split: str) -> float:
        generator = torch.Generator().manual_seed(EVAL_SEED + seed)
        total_loss = 0.0
        for _ in track(range(config["eval_iters"]), split):
            x, y = corpus.batch(split, batch_size, block, generator,
                                device=device)
            with precision.autocast():
                logits, _ = model(x)
            total_loss += float(F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), y.reshape(-1)))
        return total_loss / config["eval_iters"]

    def evaluate() -> Dict[str, float]:
        model.eval()
        train, val = estimate("train"), estimate("val")
        return {"val_loss": val, "train": train, "val": val,
                "test": math.nan, "iter": float(scheduler.last_epoch),
                "lr": scheduler.get_last_lr()[0]}

    def export() -> Dict[str, Any]:
        return {"task": "lm", "config": dict(config),
                "vocabulary": list(corpus.vocab.chars),
                "model": {k: v.detach().cpu().clone()
                          for k, v in model.state_dict().items()}}

    return Recipe(model, optimizer, train_epoch, evaluate, metric="loss",
                  higher_is_better=False, scheduler=scheduler,
                  export=export)
