"""Character-level language modelling: the package's GPT on causal token
graphs (:class:`~tgnn_transformers.models.language_model.CausalLanguageModel`)
against a plain reference GPT, trained by one shared harness.

The reference (:class:`ReferenceGPT`, below) is nanoGPT's architecture
written out here: token + learned position embeddings, pre-norm blocks of
causal self-attention through ``scaled_dot_product_attention(is_causal=
True)`` with one fused query/key/value projection, a GELU feed-forward of
width 4d, a final LayerNorm, the head tied to the embedding, GPT-2's
initialisation.  The harness is nanoGPT's ``train.py`` loop: AdamW with
weight decay on the matrices only, linear warm-up then cosine decay to
``min_lr``, gradient clipping, and ``estimate_loss`` every ``eval_interval``
steps over ``eval_iters`` batches of each split.

    TGNN_DATA_MIRROR=../shared/data python benchmarks/lm.py train \\
        --experiment cpu --models reference mha --seeds 0
    python benchmarks/lm.py steptime          # interleaved step times
    python benchmarks/lm.py parity            # ours == reference, same weights
    python benchmarks/lm.py profile --model mha
    python benchmarks/lm.py report --experiment cpu

Experiments (:data:`EXPERIMENTS`): ``cpu`` is nanoGPT's CPU run of
Shakespeare-char (4 layers, 4 heads, width 128, block 64, batch 12, 2,000
iterations; its README reports a validation loss of 1.88 in about 3
minutes), ``claim`` the same setting for standard attention against
GIN-Attention (defaults and the paper preset) and PNA-Attention (the
paper's first claim: lower losses and a smaller gap), ``window`` block 256
with the full causal graph against a causal window.

Every run writes ``results/lm/<experiment>/<run>_seed<k>.json`` atomically
(the machine, the configuration, parameters, the loss curve, final and best
validation loss, median step time, wall time); ``report`` tabulates them in
``summary.md``.  One torch thread per run (``--threads``); step time is
the batch, forward, backward, clipping and optimizer step, and wall time
adds the evaluations.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # also when loaded by file path (tests)
    sys.path.insert(0, str(BENCH))
from common import RESULTS, machine  # noqa: E402
from tgnn_transformers.data.corpus import CharCorpus, load_corpus  # noqa
from tgnn_transformers.models.language_model import (  # noqa: E402
    CausalLanguageModel)
from tgnn_transformers.models.registry import PAPER_PRESETS  # noqa: E402

LM_RESULTS = RESULTS / "lm"


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig:
    """nanoGPT's Shakespeare-char settings with its README's CPU overrides
    (``--device=cpu --compile=False --eval_iters=20 --log_interval=1
    --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
    --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``; ``bias=False``
    is train.py's default)."""
    corpus: str = "shakespeare-char"
    batch_size: int = 12
    block_size: int = 64
    num_layers: int = 4
    heads: int = 4
    hidden: int = 128
    dropout: float = 0.0
    bias: bool = False
    learning_rate: float = 1e-3
    max_iters: int = 2000
    lr_decay_iters: int = 2000
    min_lr: float = 1e-4
    warmup_iters: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    #: batches per split of one last, less noisy evaluation after training
    #: (nanoGPT's default eval_iters; not part of its CPU run).
    final_eval_iters: int = 200
    #: nanoGPT as it was when its README reported 1.88 for the CPU run
    #: (commit 23a8e70, February 2023) differs from today's in three
    #: places: no weight decay on the embeddings (nor the tied head), the
    #: warm-up ``lr * it / warmup_iters``, and the tanh approximation of
    #: GELU (``new_gelu``); and its default weight_decay was 1e-2.
    decay_embeddings: bool = True
    warmup_rule: str = "current"  # or "2023"
    activation: str = "gelu"  # or "gelu_tanh"
    #: where to train, and "bfloat16" for autocast (nanoGPT's GPU runs)
    device: str = "cpu"
    dtype: str = "float32"


#: run label -> model options (``model``: ``reference`` or an attention
#: name; ``preset``: a registry preset; the rest go to the model).
def _runs(*labels: str) -> Dict[str, Dict[str, Any]]:
    known = {
        "reference": {"model": "reference"},
        "mha": {"model": "mha"},
        "gin-attention": {"model": "gin-attention"},
        "gin-attention+paper": {"model": "gin-attention",
                                "preset": "paper"},
        "pna-attention": {"model": "pna-attention"},
        "mha+window32": {"model": "mha", "pattern": "causal-window",
                         "window": 32},
    }
    return {label: known[label] for label in labels}


EXPERIMENTS: Dict[str, Dict[str, Any]] = {
    "cpu": {"config": {}, "runs": _runs("reference", "mha")},
    # nanoGPT's CPU run as its code stood when the README reported 1.88
    "cpu-2023": {"config": {"decay_embeddings": False,
                            "warmup_rule": "2023",
                            "activation": "gelu_tanh",
                            "weight_decay": 0.01},
                 "runs": _runs("reference", "mha")},
    "claim": {"config": {}, "runs": _runs("reference", "mha",
                                          "gin-attention",
                                          "gin-attention+paper",
                                          "pna-attention")},
    "window": {"config": {"block_size": 256},
               "runs": _runs("mha", "mha+window32")},
    # nanoGPT's Shakespeare-char GPU run (config/train_shakespeare_char.py:
    # 6 layers, 6 heads, width 384, block 256, batch 64, dropout 0.2, 5,000
    # iterations, eval_iters 200; its README: val 1.4697 in ~3 minutes on
    # an A100 with torch.compile), bf16 autocast, not compiled.
    "gpu": {"config": {"batch_size": 64, "block_size": 256, "num_layers": 6,
                       "heads": 6, "hidden": 384, "dropout": 0.2,
                       "max_iters": 5000, "lr_decay_iters": 5000,
                       "eval_iters": 200, "device": "cuda",
                       "dtype": "bfloat16"},
            "runs": _runs("reference", "mha")},
}


# --------------------------------------------------------------------------
# The reference GPT
# --------------------------------------------------------------------------

class _LayerNorm(torch.nn.Module):
    """LayerNorm with an optional bias (``bias=False``: scale only)."""

    def __init__(self, channels: int, bias: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels)) if bias \
            else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias,
                            1e-5)


class _Block(torch.nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, bias: bool,
                 activation: str = "gelu"):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.approximate = "tanh" if activation == "gelu_tanh" else "none"
        self.ln_1 = _LayerNorm(hidden, bias)
        self.qkv = torch.nn.Linear(hidden, 3 * hidden, bias=bias)
        self.attn_proj = torch.nn.Linear(hidden, hidden, bias=bias)
        self.ln_2 = _LayerNorm(hidden, bias)
        self.fc = torch.nn.Linear(hidden, 4 * hidden, bias=bias)
        self.mlp_proj = torch.nn.Linear(4 * hidden, hidden, bias=bias)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)
                   for t in self.qkv(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0,
            is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.attn_proj(y), self.dropout, self.training)

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        h = self.mlp_proj(F.gelu(self.fc(self.ln_2(x)),
                                 approximate=self.approximate))
        return x + F.dropout(h, self.dropout, self.training)


class ReferenceGPT(torch.nn.Module):
    """nanoGPT's GPT, written for this benchmark (see the module docstring).
    ``forward(idx, targets=None) -> (logits [B, T, V], loss)``."""

    def __init__(self, vocab_size: int, block_size: int, hidden: int,
                 heads: int, num_layers: int, dropout: float = 0.0,
                 bias: bool = False, activation: str = "gelu"):
        super().__init__()
        self.block_size, self.dropout = block_size, dropout
        self.wte = torch.nn.Embedding(vocab_size, hidden)
        self.wpe = torch.nn.Embedding(block_size, hidden)
        self.blocks = torch.nn.ModuleList(
            _Block(hidden, heads, dropout, bias, activation)
            for _ in range(num_layers))
        self.ln_f = _LayerNorm(hidden, bias)
        self.head = torch.nn.Linear(hidden, vocab_size, bias=False)
        self.head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(module.weight, 0.0, 0.02)
                if getattr(module, "bias", None) is not None:
                    torch.nn.init.zeros_(module.bias)
        for block in self.blocks:
            for linear in (block.attn_proj, block.mlp_proj):
                torch.nn.init.normal_(linear.weight, 0.0,
                                      0.02 / math.sqrt(2 * num_layers))

    def forward(self, idx, targets=None):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)),
                                       targets.reshape(-1), ignore_index=-1)


def load_reference_into(ours: CausalLanguageModel, ref: ReferenceGPT
                        ) -> None:
    """Copies the reference's weights into an ``mha`` model of the same
    shape (learned positions), so both compute the same function."""
    hidden = ref.wte.weight.size(1)
    with torch.no_grad():
        ours.token_embedding.weight.copy_(ref.wte.weight)
        ours.position.embedding.weight.copy_(ref.wpe.weight)
        for layer, block in zip(ours.encoder.layers, ref.blocks):
            w_q, w_k, w_v = block.qkv.weight.split(hidden, dim=0)
            att = layer.attention
            att.lin_query.weight.copy_(w_q)
            att.lin_key.weight.copy_(w_k)
            att.lin_value.weight.copy_(w_v)
            att.out_proj.weight.copy_(block.attn_proj.weight)
            layer.norm1.weight.copy_(block.ln_1.weight)
            layer.norm2.weight.copy_(block.ln_2.weight)
            layer.ffn.lin1.weight.copy_(block.fc.weight)
            layer.ffn.lin2.weight.copy_(block.mlp_proj.weight)
        ours.encoder.final_norm.weight.copy_(ref.ln_f.weight)


# --------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------

def build(run: Dict[str, Any], config: TrainConfig, vocab_size: int
          ) -> torch.nn.Module:
    options = dict(run)
    model = options.pop("model")
    if model == "reference":
        return ReferenceGPT(vocab_size, config.block_size, config.hidden,
                            config.heads, config.num_layers, config.dropout,
                            config.bias, config.activation)
    attention_kwargs = dict(PAPER_PRESETS[model]) if \
        options.pop("preset", None) == "paper" else {}
    attention_kwargs.update(options.pop("attention_kwargs", {}))
    return CausalLanguageModel(
        vocab_size, config.block_size, attention=model,
        hidden=config.hidden, heads=config.heads,
        num_layers=config.num_layers, dropout=config.dropout,
        bias=config.bias, activation=config.activation,
        attention_kwargs=attention_kwargs, **options)


def _is_norm(module: torch.nn.Module) -> bool:
    return "Norm" in type(module).__name__


def configure_optimizer(model: torch.nn.Module, config: TrainConfig
                        ) -> torch.optim.AdamW:
    """AdamW with weight decay on the parameters of two or more dimensions
    (the matrices of the linear maps and embeddings), none on biases and
    gains (nanoGPT's rule).  Biases and norm modules' parameters are never
    decayed, whatever their shape (per-head layers keep ``[H, C]`` biases
    and gains).  ``decay_embeddings=False`` leaves the embeddings (and the
    head tied to the token embedding) undecayed, as nanoGPT did until May
    2023."""
    norm_params = {id(p) for m in model.modules() if _is_norm(m)
                   for p in m.parameters(recurse=False)}
    if not config.decay_embeddings:
        norm_params |= {id(p) for m in model.modules()
                        if isinstance(m, torch.nn.Embedding)
                        for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # each tied parameter once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in norm_params
         and not name.endswith("bias") else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, betas=(config.beta1, config.beta2))


def learning_rate(it: int, config: TrainConfig) -> float:
    """nanoGPT's ``get_lr``: linear warm-up ``lr (it + 1) / (warmup + 1)``,
    then cosine decay to ``min_lr`` at ``lr_decay_iters``, then
    ``min_lr``."""
    if it < config.warmup_iters:
        if config.warmup_rule == "2023":  # 0 at it = 0
            return config.learning_rate * it / config.warmup_iters
        return config.learning_rate * (it + 1) / (config.warmup_iters + 1)
    if it > config.lr_decay_iters:
        return config.min_lr
    ratio = (it - config.warmup_iters) / (config.lr_decay_iters -
                                          config.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return config.min_lr + coeff * (config.learning_rate - config.min_lr)


def _device(config: TrainConfig) -> Optional[str]:
    """Where batches go (``None``: stay on the CPU, as they are drawn)."""
    return None if config.device == "cpu" else config.device


def _autocast(config: TrainConfig):
    if config.dtype == "bfloat16":
        return torch.autocast(torch.device(config.device).type,
                              dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(config: TrainConfig) -> None:
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def estimate_loss(model, corpus: CharCorpus, config: TrainConfig,
                  iters: int, seed: int) -> Dict[str, float]:
    """Mean loss over ``iters`` batches of each split, drawn from a
    generator seeded with ``seed`` (the same batches at every evaluation
    and for every model of a seed)."""
    model.eval()
    out = {}
    for split in ("train", "val"):
        gen = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(iters):
            x, y = corpus.batch(split, config.batch_size, config.block_size,
                                gen, device=_device(config))
            with _autocast(config):
                losses.append(float(model(x, y)[1]))
        out[split] = statistics.fmean(losses)
    model.train()
    return out


def train_run(run: Dict[str, Any], corpus: CharCorpus, config: TrainConfig,
              seed: int, log=print,
              model: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
    """One training run (nanoGPT's loop) of a new model of ``run``, or of
    ``model`` when given (trained in place); returns its record."""
    torch.manual_seed(seed)
    if model is None:
        model = build(run, config, corpus.vocab_size)
    model.to(config.device)
    optimizer = configure_optimizer(model, config)
    batches = torch.Generator().manual_seed(seed)
    eval_seed = 1_000_003 + seed
    curve: List[Dict[str, float]] = []
    step_times: List[float] = []
    wall0 = time.perf_counter()
    for it in range(config.max_iters + 1):
        lr = learning_rate(it, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % config.eval_interval == 0 or it == config.max_iters:
            losses = estimate_loss(model, corpus, config, config.eval_iters,
                                   eval_seed)
            curve.append({"iter": it, "lr": lr, **losses,
                          "elapsed_s": time.perf_counter() - wall0})
            log(f"  step {it}: train {losses['train']:.4f} val "
                f"{losses['val']:.4f} ({time.perf_counter() - wall0:.0f} s;"
                f" step {statistics.median(step_times[-200:]) * 1e3:.1f} ms)"
                if step_times else f"  step {it}: train "
                f"{losses['train']:.4f} val {losses['val']:.4f}")
        if it == config.max_iters:
            break
        t0 = time.perf_counter()
        x, y = corpus.batch("train", config.batch_size, config.block_size,
                            batches, device=_device(config))
        with _autocast(config):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(),
                                           config.grad_clip)
        optimizer.step()
        _sync(config)
        step_times.append(time.perf_counter() - t0)
    train_wall = time.perf_counter() - wall0
    final = estimate_loss(model, corpus, config, config.final_eval_iters,
                          eval_seed + 7)
    return {
        "final_val_loss": curve[-1]["val"],
        "final_train_loss": curve[-1]["train"],
        "best_val_loss": min(point["val"] for point in curve),
        "final_eval": {"iters": config.final_eval_iters, **final},
        "gap": curve[-1]["val"] - curve[-1]["train"],
        "median_step_s": statistics.median(step_times),
        "mean_step_s": statistics.fmean(step_times),
        "wall_s": train_wall,
        "parameters": sum(p.numel() for p in model.parameters()),
        "curve": curve,
        "model_repr": repr(model),
    }


def _atomic_write(path: Path, payload: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def _config(args) -> TrainConfig:
    config = TrainConfig(**EXPERIMENTS[args.experiment]["config"])
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep or not hasattr(config, key):
            names = ", ".join(f.name for f in dataclasses.fields(config))
            raise SystemExit(f"--set expects KEY=VALUE with KEY one of "
                             f"{names}; got {item!r}")
        kind = type(getattr(config, key))
        setattr(config, key, (value.lower() in ("1", "true", "yes"))
                if kind is bool else kind(value))
    return config


def _selected_runs(args) -> Dict[str, Dict[str, Any]]:
    runs = EXPERIMENTS[args.experiment]["runs"]
    if not args.models:
        return runs
    unknown = [m for m in args.models if m not in runs]
    if unknown:
        raise SystemExit(f"--models: {unknown} not in experiment "
                         f"{args.experiment!r} (runs: {', '.join(runs)})")
    return {m: runs[m] for m in args.models}


def train(args) -> None:
    config = _config(args)
    corpus = load_corpus(config.corpus)
    out = Path(args.out) / args.experiment
    for seed in args.seeds:
        for label, run in _selected_runs(args).items():
            print(f"{args.experiment} {label} seed {seed}", flush=True)
            load_before = os.getloadavg()
            record = train_run(run, corpus, config, seed,
                               log=lambda s: print(s, flush=True))
            # The machine is shared: its load average (1, 5, 15 min) at
            # the start and end of the run says how loaded the timing was.
            record.update(experiment=args.experiment, run=label,
                          options=run, seed=seed,
                          config=dataclasses.asdict(config),
                          machine={**machine(), "load_average": {
                              "start": load_before,
                              "end": os.getloadavg()}})
            path = out / f"{label}_seed{seed}{args.suffix}.json"
            _atomic_write(path, record)
            print(f"  -> val {record['final_val_loss']:.4f} (final eval "
                  f"{record['final_eval']['val']:.4f}), median step "
                  f"{record['median_step_s'] * 1e3:.1f} ms, wall "
                  f"{record['wall_s']:.0f} s, {path}", flush=True)


# --------------------------------------------------------------------------
# Step time, parity and profile
# --------------------------------------------------------------------------

def _step_fn(model, corpus, config, gen):
    optimizer = configure_optimizer(model, config)

    def step():
        x, y = corpus.batch("train", config.batch_size, config.block_size,
                            gen)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
    return step


def steptime(args) -> None:
    """Median training-step time of each run, interleaved in blocks of
    ``--block`` steps so that a change of load on the shared machine hits
    every model alike."""
    config = _config(args)
    corpus = load_corpus(config.corpus)
    runs = _selected_runs(args)
    steps = {}
    for label, run in runs.items():
        torch.manual_seed(0)
        steps[label] = _step_fn(build(run, config, corpus.vocab_size),
                                corpus, config,
                                torch.Generator().manual_seed(0))
        for _ in range(args.warmup):
            steps[label]()
    times: Dict[str, List[float]] = {label: [] for label in runs}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for label, step in steps.items():
            for _ in range(args.block):
                t0 = time.perf_counter()
                step()
                times[label].append(time.perf_counter() - t0)
    medians = {label: statistics.median(t) for label, t in times.items()}
    base = medians.get("reference")
    for label, median in medians.items():
        ratio = f", {median / base:.2f}x reference" if base else ""
        print(f"{label}: median step {median * 1e3:.2f} ms{ratio}")
    record = {"config": dataclasses.asdict(config),
              "machine": {**machine(), "load_average": {
                  "start": load_before, "end": os.getloadavg()}},
              "rounds": args.rounds, "block": args.block,
              "median_step_s": medians,
              "ratio_to_reference": {k: v / base for k, v in medians.items()}
              if base else None}
    _atomic_write(Path(args.out) / args.experiment /
                  f"steptime{args.suffix}.json", record)


def parity(args) -> None:
    """Loads a reference GPT's weights into our ``mha`` model and compares
    logits, loss and gradients on one batch."""
    config = _config(args)
    corpus = load_corpus(config.corpus)
    torch.manual_seed(0)
    ref = build({"model": "reference"}, config, corpus.vocab_size)
    ours = build({"model": "mha"}, config, corpus.vocab_size)
    load_reference_into(ours, ref)
    x, y = corpus.batch("train", config.batch_size, config.block_size,
                        torch.Generator().manual_seed(0))
    ref_logits, ref_loss = ref(x, y)
    logits, loss = ours(x, y)
    ref_loss.backward()
    loss.backward()
    grad_diff = (ours.token_embedding.weight.grad -
                 ref.wte.weight.grad).abs().max()
    print(f"max |logits diff| {(logits - ref_logits).abs().max():.2e}, "
          f"loss {loss.item():.6f} vs {ref_loss.item():.6f}, embedding "
          f"grad diff {grad_diff:.2e}")


def profile(args) -> None:
    """torch.profiler over ``--steps`` training steps of one run, forward
    regions labelled per module kind; the op table goes to
    ``profile_<run>.txt``."""
    from torch.profiler import ProfilerActivity, record_function
    config = _config(args)
    corpus = load_corpus(config.corpus)
    label = args.model
    run = EXPERIMENTS[args.experiment]["runs"][label]
    torch.manual_seed(0)
    model = build(run, config, corpus.vocab_size)
    step = _step_fn(model, corpus, config, torch.Generator().manual_seed(0))
    for _ in range(args.warmup):
        step()
    # Label the forward of every submodule kind (the backward shows up as
    # autograd nodes).
    open_ranges = {}

    def enter(module, _inputs):
        rf = record_function(f"## {type(module).__name__}")
        rf.__enter__()
        open_ranges.setdefault(id(module), []).append(rf)

    def leave(module, _inputs, _output):
        open_ranges[id(module)].pop().__exit__(None, None, None)
    handles = []
    for module in model.modules():
        if module is model:
            continue
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            with record_function("## step"):
                step()
    for h in handles:
        h.remove()
    averages = prof.key_averages()
    categories = _categories(averages, args.steps)
    table = averages.table(sort_by="cpu_time_total", row_limit=args.rows)
    self_table = averages.table(sort_by="self_cpu_time_total",
                                row_limit=args.rows)
    path = Path(args.out) / args.experiment / f"profile_{label}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".txt.tmp")
    summary = "\n".join(f"{name:>34}: {ms:8.2f} ms/step"
                        for name, ms in categories.items())
    tmp.write_text(f"{args.steps} steps of {label}\n\nself CPU time by "
                   f"kind of op\n{summary}\n\nby total time\n{table}\n\n"
                   f"by self time\n{self_table}\n")
    tmp.replace(path)
    print(self_table)
    print(summary)
    print("written", path)


#: kind of op -> substrings of the profiler's op names (first match wins);
#: their self CPU time, forward and backward.
OP_KINDS = {
    "matmul (projections, FFN, head)": ("aten::mm", "aten::addmm",
                                        "aten::bmm"),
    "scaled_dot_product_attention": ("scaled_dot_product", ),
    "GELU": ("gelu", ),
    "LayerNorm": ("layer_norm", ),
    "embedding, cross-entropy": ("embedding", "log_softmax", "nll_loss"),
    "graph tensors (index, bincount, repeat_interleave, equal, item)": (
        "index", "bincount", "repeat_interleave", "aten::equal",
        "aten::item", "aminmax"),
}
#: labelled ranges whose whole (CPU total) time is one entry.
RANGE_KINDS = {"optimizer step (AdamW)": "Optimizer.step#AdamW.step"}
#: module labels whose own Python time (self CPU) is one entry.
PYTHON_KINDS = ("MultiHeadAttentionConv", "GINAttentionConv",
                "PNAAttentionConv", "_Block")


def _categories(averages, steps: int) -> Dict[str, float]:
    """Per-step milliseconds of a profiled run: the whole step, the self
    time of each kind of op (:data:`OP_KINDS`), the optimizer step, the
    attention modules' own Python time, and the rest."""
    by_key = {event.key: event for event in averages}
    out: Dict[str, float] = {}
    step = by_key["## step"].cpu_time_total / 1e3
    for name, keys in OP_KINDS.items():
        out[name] = sum(e.self_cpu_time_total for e in averages
                        if not e.key.startswith("## ") and
                        any(k in e.key for k in keys)) / 1e3
    for name, key in RANGE_KINDS.items():
        out[name] = by_key[key].cpu_time_total / 1e3 if key in by_key \
            else 0.0
    for name in PYTHON_KINDS:
        if f"## {name}" in by_key:
            out[f"{name} Python (self)"] = \
                by_key[f"## {name}"].self_cpu_time_total / 1e3
    out["rest (other ops, Python, autograd)"] = step - sum(out.values())
    out["whole step"] = step
    return {name: ms / steps for name, ms in out.items()}


# --------------------------------------------------------------------------
# Generation speed
# --------------------------------------------------------------------------

@torch.no_grad()
def sliding_generate(model, idx: torch.Tensor, new_tokens: int,
                     block_size: int) -> torch.Tensor:
    """Greedy decoding as nanoGPT's ``generate``: every step runs the last
    ``block_size`` tokens through the whole model (``model(idx)`` returns
    ``(logits, loss)``)."""
    for _ in range(new_tokens):
        logits = model(idx[:, -block_size:])[0][:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


def generation(args) -> None:
    """Cached generation against recomputing the context per token: an
    ``mha`` model of the ``window`` experiment's shape (block 256) trained
    for ``--train-iters`` steps, ``--new-tokens`` greedy tokens after a
    prompt of one block of the validation text, interleaved rounds, median
    wall and CPU time of each way:

    * ``cached``: ``generate(cache=True)``, one new node per token reading
      the cached keys and values;
    * ``recompute``: ``generate(cache=False)``, the same context rule, the
      context run through the model at every token (same tokens);
    * ``sliding``: nanoGPT's rule, the last ``block_size`` tokens run at
      every token, through our model and through the reference GPT (other
      tokens once past the block: a cache cannot follow this rule)."""
    config = _config(args)
    corpus = load_corpus(config.corpus)
    torch.manual_seed(0)
    model = build({"model": "mha"}, config, corpus.vocab_size)
    record: Dict[str, Any] = {"config": dataclasses.asdict(config),
                              "train_iters": args.train_iters,
                              "new_tokens": args.new_tokens,
                              "repeats": args.repeats}
    if args.train_iters:
        trained = dataclasses.replace(
            config, max_iters=args.train_iters,
            lr_decay_iters=args.train_iters,
            warmup_iters=min(config.warmup_iters, args.train_iters // 10),
            eval_interval=args.train_iters, eval_iters=5,
            final_eval_iters=5)
        result = train_run({"model": "mha"}, corpus, trained, 0,
                           log=lambda s: print(s, flush=True), model=model)
        record["val_loss"] = result["final_val_loss"]
    model.eval()
    reference = build({"model": "reference"}, config,
                      corpus.vocab_size).eval()
    block = config.block_size
    prompt = corpus.val[None, :block]
    load_before = os.getloadavg()
    ways = {
        "cached": lambda: model.generate(prompt, args.new_tokens,
                                         temperature=0, cache=True),
        "recompute": lambda: model.generate(prompt, args.new_tokens,
                                            temperature=0, cache=False),
        "sliding": lambda: sliding_generate(model, prompt, args.new_tokens,
                                            block),
        "reference sliding": lambda: sliding_generate(
            reference, prompt, args.new_tokens, block),
    }
    wall: Dict[str, List[float]] = {k: [] for k in ways}
    cpu: Dict[str, List[float]] = {k: [] for k in ways}
    outputs: Dict[str, torch.Tensor] = {}
    for round_ in range(args.repeats):
        for name, way in ways.items():
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name] = way()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            print(f"round {round_} {name}: {wall[name][-1]:.2f} s wall, "
                  f"{cpu[name][-1]:.2f} s CPU", flush=True)
    # Sampling with one seed gives one text, with the cache or without.
    sampled = {cache: model.generate(
        prompt, args.new_tokens, temperature=0.8, top_k=200, cache=cache,
        generator=torch.Generator().manual_seed(0)) for cache in (True,
                                                                   False)}
    median_wall = {k: statistics.median(v) for k, v in wall.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    record.update(
        machine={**machine(), "load_average": {"start": load_before,
                                               "end": os.getloadavg()}},
        wall_s=wall, cpu_s=cpu, median_wall_s=median_wall,
        median_cpu_s=median_cpu,
        tokens_per_s={k: args.new_tokens / v for k, v in
                      median_wall.items()},
        speedup_wall={k: median_wall[k] / median_wall["cached"]
                      for k in ways},
        speedup_cpu={k: median_cpu[k] / median_cpu["cached"] for k in ways},
        greedy_identical=bool(torch.equal(outputs["cached"],
                                          outputs["recompute"])),
        sampled_identical=bool(torch.equal(sampled[True], sampled[False])),
        first_difference_sliding=_first_difference(outputs["cached"],
                                                    outputs["sliding"],
                                                    block),
        greedy_text=corpus.decode(outputs["cached"][0, block:]),
        sampled_text=corpus.decode(sampled[True][0, block:]),
        prompt=corpus.decode(prompt[0]))
    out = Path(args.out) / "generation"
    _atomic_write(out / f"generation{args.suffix}.json", record)
    lines = [f"# Generation: {args.new_tokens} new tokens after a "
             f"{block}-token prompt, block {block}", "",
             f"{args.repeats} interleaved rounds, one torch thread; load "
             f"average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f} on "
             f"{record['machine']['cpus']} CPUs; model trained "
             f"{args.train_iters} steps.", "",
             "| way | median wall (s) | tokens/s | wall / cached | median "
             "CPU (s) | CPU / cached |", "|---|---|---|---|---|---|"]
    for name in ways:
        lines.append(f"| {name} | {median_wall[name]:.2f} | "
                     f"{args.new_tokens / median_wall[name]:.1f} | "
                     f"{record['speedup_wall'][name]:.2f}x | "
                     f"{median_cpu[name]:.2f} | "
                     f"{record['speedup_cpu'][name]:.2f}x |")
    lines += ["", f"Greedy tokens identical with and without the cache: "
              f"{record['greedy_identical']}; sampled (seed 0, T 0.8, top-k"
              f" 200): {record['sampled_identical']}.  nanoGPT's sliding "
              f"context first differs at new token "
              f"{record['first_difference_sliding']}.", "",
              "Greedy continuation (cached):", "", "```",
              record["greedy_text"], "```"]
    path = out / f"summary{args.suffix}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    print("\n".join(lines))


def _first_difference(a: torch.Tensor, b: torch.Tensor,
                      offset: int) -> Optional[int]:
    differ = (a[0, offset:] != b[0, offset:]).nonzero()
    return int(differ[0]) if differ.numel() else None


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _mean_std(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def _records(folder: Path) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(
        folder.glob("*_seed*.json"))]


def _same_setting(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Two records' configurations are equal (fields a record predates
    take their default)."""
    defaults = dataclasses.asdict(TrainConfig())
    return {**defaults, **a} == {**defaults, **b}


def _compare(a: List[float], b: List[float]
             ) -> Tuple[float, Optional[float]]:
    """``mean(a) - mean(b)`` and its standard error (Welch; ``None`` when
    neither side has two values)."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    var = sum(statistics.variance(x) / len(x) for x in (a, b)
              if len(x) > 1)
    return diff, (math.sqrt(var) if var > 0 else None)


def _difference(a: List[float], b: List[float]) -> str:
    """``mean(a) - mean(b)`` and that difference over its standard error
    (Welch), e.g. ``+0.0950 (9.1 se)``."""
    diff, se = _compare(a, b)
    return f"{diff:+.4f} ({diff / se:+.1f} se)" if se else f"{diff:+.4f}"


#: a difference of the means counts as one (not noise) from this many
#: standard errors on
SIGNIFICANT_SE = 2.0


def _claim_answer(by_run: Dict[str, List[Dict[str, Any]]], base: str
                  ) -> List[str]:
    """The paper's first claim (a model has lower training and validation
    loss and a smaller gap than ``base``) answered in words for every other
    model, from the final evaluations: each difference is called lower or
    higher when it is at least :data:`SIGNIFICANT_SE` standard errors from
    zero, else within the seed-to-seed noise."""
    lines = []
    ref = by_run[base]
    measures = (("training loss", lambda r: r["final_eval"]["train"]),
                ("validation loss", lambda r: r["final_eval"]["val"]),
                ("gap", lambda r: r["final_eval"]["val"] -
                 r["final_eval"]["train"]))
    for label, rs in by_run.items():
        if label in (base, "reference"):
            continue
        words, verdicts = [], []
        for name, value in measures:
            diff, se = _compare([value(r) for r in rs],
                                [value(r) for r in ref])
            if se is None:
                words.append(f"{name} {diff:+.4f} (no error bar)")
                verdicts.append(None)
                continue
            t = diff / se
            lower = "smaller" if name == "gap" else "lower"
            higher = "larger" if name == "gap" else "higher"
            if abs(t) >= SIGNIFICANT_SE:
                verdict = lower if diff < 0 else higher
                verdicts.append(diff < 0)
            else:
                verdict = "within noise"
                verdicts.append(None)
            words.append(f"{name} {diff:+.4f} ({verdict}, {t:+.1f} se)")
        seeds = f"{len(rs)} seed{'s' if len(rs) > 1 else ''} against " \
            f"{len(ref)}"
        if all(v is True for v in verdicts):
            outcome = "the claim holds"
        elif any(v is False for v in verdicts):
            against = [name for (name, _), v in zip(measures, verdicts)
                       if v is False]
            outcome = ("the claim does not hold (" + ", ".join(against) +
                       " the other way)")
        elif len(rs) < 2 and len(ref) < 2:
            outcome = "one seed each: no answer"
        else:
            outcome = "the claim is not shown (differences within noise)"
        lines.append(f"- `{label}` ({seeds}): " + "; ".join(words) +
                     f": {outcome}.")
    return lines


def report(args) -> None:
    """``summary.md`` (and ``curves.png``) of an experiment's runs: per
    run and per model (mean ± std over seeds) the validation and training
    loss at the last evaluation (``eval_iters`` batches) and in the final
    evaluation (``final_eval_iters`` batches), the gap, parameters and step
    time; with ``--with OTHER``, runs of another experiment of the same
    configuration complete the table (e.g. the claim's ``mha`` and
    ``reference`` are the ``cpu`` experiment's runs); models are compared
    with ``--baseline`` (differences of the means and their standard
    errors)."""
    folder = Path(args.out) / args.experiment
    records = _records(folder)
    if not records:
        raise SystemExit(f"no runs in {folder}")
    borrowed = set()
    own = {r["run"] for r in records}
    for other in args.with_experiments or ():
        for r in _records(Path(args.out) / other):
            if r["run"] in own:
                continue
            if not _same_setting(r["config"], records[0]["config"]):
                raise SystemExit(f"--with {other}: run {r['run']} seed "
                                 f"{r['seed']} has another configuration")
            records.append(r)
            borrowed.add((r["run"], other))
    order = list(EXPERIMENTS[args.experiment]["runs"])
    by_run: Dict[str, List[Dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (
            order.index(r["run"]) if r["run"] in order else len(order),
            r["seed"])):
        by_run.setdefault(r["run"], []).append(r)
    ref_step = None
    if "reference" in by_run:
        ref_step = statistics.fmean(r["median_step_s"]
                                    for r in by_run["reference"])
    origin = {run: f" ({other})" for run, other in borrowed}
    lines = [f"# Language modelling, experiment `{args.experiment}`", ""]
    loads = [r["machine"]["load_average"] for r in records
             if "load_average" in r.get("machine", {})]
    machine_info = records[0].get("machine", {})
    lines += [f"Machine: {machine_info.get('platform')}, "
              f"{machine_info.get('cpus')} CPUs, torch "
              f"{machine_info.get('torch')}, one torch thread per run." +
              (f" Load average (1 min) at the runs' starts: "
               f"{min(l['start'][0] for l in loads):.1f} to "
               f"{max(l['start'][0] for l in loads):.1f} (other jobs "
               "shared the machine; step times are comparable only within"
               " the interleaved `steptime` run)." if loads else ""), ""]
    lines += ["| run | seed | val loss | train loss | gap | val (final "
              "eval) | train (final eval) | median step (ms) | wall (s) | "
              "parameters |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, rs in by_run.items():
        for r in rs:
            lines.append(
                f"| {label}{origin.get(label, '')} | {r['seed']} | "
                f"{r['final_val_loss']:.4f} | {r['final_train_loss']:.4f} |"
                f" {r['gap']:.4f} | {r['final_eval']['val']:.4f} | "
                f"{r['final_eval']['train']:.4f} | "
                f"{r['median_step_s'] * 1e3:.1f} | {r['wall_s']:.0f} | "
                f"{r['parameters']:,} |")
    lines += ["", "Mean ± std over seeds (final eval: "
              f"{records[0]['final_eval']['iters']} batches of each split "
              "after training; gap = val - train of the final eval):", "",
              "| run | seeds | parameters | val loss | val (final eval) | "
              "train (final eval) | gap (final eval) | median step (ms) | "
              "step / reference |", "|---|---|---|---|---|---|---|---|---|"]

    def final(r, key):
        return r["final_eval"][key]

    def gap(r):
        return final(r, "val") - final(r, "train")
    for label, rs in by_run.items():
        step = statistics.fmean(r["median_step_s"] for r in rs)
        ratio = f"{step / ref_step:.2f}x" if ref_step else "-"
        lines.append(
            f"| {label} | {len(rs)} | {rs[0]['parameters']:,} | "
            f"{_mean_std([r['final_val_loss'] for r in rs])} | "
            f"{_mean_std([final(r, 'val') for r in rs])} | "
            f"{_mean_std([final(r, 'train') for r in rs])} | "
            f"{_mean_std([gap(r) for r in rs])} | {step * 1e3:.1f} | "
            f"{ratio} |")
    base = args.baseline
    if base in by_run and len(by_run) > 1:
        lines += ["", f"Differences to `{base}` (mean of the model - mean "
                  f"of `{base}`, final eval; se: Welch standard error):", "",
                  "| run | val | train | gap |", "|---|---|---|---|"]
        ref = by_run[base]
        for label, rs in by_run.items():
            if label == base:
                continue
            lines.append(
                f"| {label} | "
                f"{_difference([final(r, 'val') for r in rs], [final(r, 'val') for r in ref])} | "  # noqa: E501
                f"{_difference([final(r, 'train') for r in rs], [final(r, 'train') for r in ref])} | "  # noqa: E501
                f"{_difference([gap(r) for r in rs], [gap(r) for r in ref])} |")  # noqa: E501
    if args.experiment == "claim" and base in by_run:
        lines += ["", f"Answer (the paper's first claim: lower training "
                  f"and validation loss and a smaller gap than `{base}`; "
                  f"final eval, difference of the means, called only at "
                  f"{SIGNIFICANT_SE:g} standard errors or more):", ""]
        lines += _claim_answer(by_run, base)
    steptime_file = folder / "steptime.json"
    if steptime_file.is_file():
        timed = json.loads(steptime_file.read_text())
        ratios = timed.get("ratio_to_reference") or {}
        load = timed["machine"].get("load_average")
        under = (f"; load average {load['start'][0]:.1f} -> "
                 f"{load['end'][0]:.1f}" if load else "")
        lines += ["", f"Interleaved step times ({timed['rounds']} rounds of "
                  f"{timed['block']} steps per run, `steptime`{under}): " +
                  ", ".join(f"{k} {v * 1e3:.1f} ms" +
                            (f" ({ratios[k]:.2f}x)" if k in ratios else "")
                            for k, v in timed["median_step_s"].items())]
    if _plot_curves(by_run, folder / "curves.png"):
        lines += ["", "Curves (mean over seeds, band ± std): "
                  "`curves.png`."]
    path = folder / "summary.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    print("\n".join(lines))


def _plot_curves(by_run: Dict[str, List[Dict[str, Any]]],
                 path: Path) -> bool:
    """Train and validation loss per evaluation and their gap, mean ± std
    over seeds, one colour per run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_loss, ax_gap) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rs in by_run.items():
        iters = [p["iter"] for p in rs[0]["curve"]]
        series = {
            "train": [[p["train"] for p in r["curve"]] for r in rs],
            "val": [[p["val"] for p in r["curve"]] for r in rs],
            "gap": [[p["val"] - p["train"] for p in r["curve"]]
                    for r in rs]}
        color = None
        for key, ax, style in (("val", ax_loss, "-"),
                               ("train", ax_loss, "--"),
                               ("gap", ax_gap, "-")):
            columns = list(zip(*series[key]))
            mean = [statistics.fmean(c) for c in columns]
            std = [statistics.pstdev(c) for c in columns]
            line, = ax.plot(iters, mean, style, color=color, lw=1.2,
                            label=f"{label} {key}")
            color = line.get_color()
            ax.fill_between(iters, [m - d for m, d in zip(mean, std)],
                            [m + d for m, d in zip(mean, std)],
                            color=color, alpha=0.15, lw=0)
    ax_loss.set(xlabel="step", ylabel="loss", ylim=(1.4, 3.0),
                title="train (--) and validation (-) loss")
    ax_gap.set(xlabel="step", ylabel="val - train",
               title="generalisation gap")
    ax_loss.legend(fontsize=7)
    ax_gap.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--experiment", default="cpu",
                       choices=sorted(EXPERIMENTS))
        p.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                       help="override a TrainConfig field")
        p.add_argument("--out", default=str(LM_RESULTS))
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--suffix", default="",
                       help="appended to result file names")
        return p

    p = common(sub.add_parser("train", help="train runs, one JSON each"))
    p.add_argument("--models", nargs="*", help="run labels (default: all "
                   "of the experiment)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.set_defaults(fn=train)
    p = common(sub.add_parser("steptime", help="interleaved step times"))
    p.add_argument("--models", nargs="*")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--warmup", type=int, default=10)
    p.set_defaults(fn=steptime)
    p = common(sub.add_parser("parity", help="ours with the reference's "
                              "weights computes the reference"))
    p.set_defaults(fn=parity)
    p = common(sub.add_parser("profile", help="torch.profiler of steps"))
    p.add_argument("--model", default="mha")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rows", type=int, default=40)
    p.set_defaults(fn=profile)
    p = common(sub.add_parser("report", help="summary.md of the runs"))
    p.add_argument("--with", dest="with_experiments", nargs="*",
                   metavar="EXPERIMENT", help="add the runs of other "
                   "experiments of the same configuration")
    p.add_argument("--baseline", default="mha",
                   help="the run the others are compared with")
    p.set_defaults(fn=report)
    p = common(sub.add_parser("generation", help="cached generation vs "
                              "recomputing the context per token"))
    p.add_argument("--train-iters", type=int, default=300)
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(fn=generation, experiment="window")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.fn(args)


if __name__ == "__main__":
    main()
