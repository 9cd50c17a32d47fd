r"""Character-level corpora for language modelling: a vocabulary of
characters, the corpus encoded as one long id sequence, nanoGPT's split and
its random-block batches.

The corpus ``shakespeare-char`` is Tiny Shakespeare (1,115,394 characters,
65 distinct), looked up at ``text/tinyshakespeare/input.txt`` below the data
root (``TGNN_DATA_ROOT``), then in the offline mirror
(``TGNN_DATA_MIRROR``), which is only read; any other UTF-8 text file is
given by its path::

    corpus = load_corpus("shakespeare-char")
    x, y = corpus.batch("train", batch_size=12, block_size=64,
                        generator=torch.Generator().manual_seed(0))

Conventions follow nanoGPT's ``data/shakespeare_char/prepare.py`` and
``train.py``: the vocabulary is the sorted set of distinct characters of the
whole text, the first 90 % of the characters (by position) train and the
last 10 % validate, and a batch is ``B`` blocks of ``T`` consecutive ids
starting at uniformly drawn offsets :math:`s_b \in [0, n - T)` of the split
(:math:`n` its length), with the targets shifted by one:

.. math::
    x_{b,t} = d_{s_b + t}, \qquad y_{b,t} = d_{s_b + t + 1}, \qquad
    0 \le t < T.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..functional._checks import check_choice
from .sources import (MIRROR_ENV, ROOT_ENV, DataSourceError, PathLike,
                      data_mirror, data_root)

#: Named corpora: name -> path below the data root / mirror.
CORPORA: Dict[str, str] = {
    "shakespeare-char": "text/tinyshakespeare/input.txt",
}
SPLITS = ("train", "val")
#: nanoGPT's share of the characters (the first ones) that train.
TRAIN_FRACTION = 0.9


class CharVocabulary:
    """A character vocabulary: id ``i`` is the ``i``-th character of
    ``chars`` (nanoGPT's ``itos``).  Kept apart from the corpus so a trained
    model's vocabulary can be saved and rebuilt (``CharVocabulary(chars)``)
    without the text.

    Args:
        chars: the distinct characters, in id order.
    """

    def __init__(self, chars: Union[str, Sequence[str]]):
        chars = list(chars)
        if not chars:
            raise ValueError("chars must hold at least one character, got "
                             "an empty vocabulary")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got "
                                 f"{c!r}")
        if len(set(chars)) != len(chars):
            repeated = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"chars must be distinct, got duplicates "
                             f"{repeated}")
        self.chars: List[str] = chars
        self.stoi: Dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocabulary":
        """The sorted distinct characters of ``text`` (prepare.py's
        vocabulary)."""
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self.stoi

    def encode(self, text: str) -> Tensor:
        """``[len(text)]`` long tensor of ids; an unknown character raises a
        ``ValueError`` naming it and its position."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        stoi = self.stoi
        try:
            ids = [stoi[c] for c in text]
        except KeyError:
            position = next(i for i, c in enumerate(text) if c not in stoi)
            raise ValueError(
                f"character {text[position]!r} at position {position} is "
                f"not in the vocabulary of {len(self)} characters") from None
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Union[Tensor, Iterable[int]]) -> str:
        """The text of a 1-D sequence of ids; an id outside
        ``[0, len(self))`` raises a ``ValueError`` naming it and its
        position."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1 or ids.is_floating_point():
                raise ValueError(f"ids must be a 1-D integer tensor, got "
                                 f"{ids.dtype} of shape {list(ids.shape)}")
            ids = ids.tolist()
        chars = self.chars
        out = []
        for position, i in enumerate(ids):
            if not 0 <= int(i) < len(chars):
                raise ValueError(f"id {int(i)} at position {position} is "
                                 f"outside the vocabulary [0, {len(chars)})")
            out.append(chars[int(i)])
        return "".join(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} characters)"


def read_text_file(path: PathLike) -> str:
    """The whole of a UTF-8 text file; a missing, unreadable, empty or
    non-UTF-8 file raises a :class:`DataSourceError` naming the path."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataSourceError(f"text file {path} not found (or not a "
                              "regular file)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataSourceError(f"text file {path} could not be read: "
                              f"{err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataSourceError(
            f"text file {path} is not UTF-8: byte {raw[err.start]:#04x} at "
            f"offset {err.start} ({err.reason}); re-encode it as UTF-8"
        ) from None
    if not text:
        raise DataSourceError(f"text file {path} is empty")
    return text


def find_corpus(name: str, root: Optional[PathLike] = None,
                mirror: Optional[PathLike] = None) -> Path:
    """The file of a named corpus (:data:`CORPORA`): below the data root,
    else in the mirror (the same lookup as the text classification data
    sets)."""
    check_choice("corpus", name, CORPORA)
    relative = CORPORA[name]
    base, mirror_path = data_root(root), data_mirror(mirror)
    candidates = [base / relative]
    if mirror_path is not None:
        candidates.append(mirror_path / relative)
    for path in candidates:
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in candidates)
    hint = (f"set {MIRROR_ENV} to the folder holding {relative}"
            if mirror_path is None else
            f"the mirror {mirror_path} ({MIRROR_ENV}) lacks {relative}")
    raise DataSourceError(f"corpus {name!r}: {relative} not found at {where};"
                          f" {hint}, or put it below the data root "
                          f"({ROOT_ENV})")


class CharCorpus:
    r"""A text as one sequence of character ids, split and batched as
    nanoGPT does (see the module docstring for the formulas).

    Args:
        text: the whole corpus.
        vocab: the vocabulary (default: the sorted distinct characters of
            ``text``); every character of ``text`` must be in it.
        train_fraction: share of the characters, from the start, that
            train (nanoGPT: 0.9); the rest validates.
        source: where the text came from (used in messages).

    Attributes:
        data: ``[n]`` long tensor, the encoded text.
        train, val: its first ``int(n * train_fraction)`` ids and the rest.
    """

    def __init__(self, text: str, *, vocab: Optional[CharVocabulary] = None,
                 train_fraction: float = TRAIN_FRACTION,
                 source: str = "<text>"):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError(f"text from {source} is empty")
        if isinstance(train_fraction, bool) or not isinstance(
                train_fraction, (int, float)) or \
                not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be a number in (0, 1), "
                             f"got {train_fraction!r}")
        self.source = source
        self.vocab = vocab if vocab is not None else \
            CharVocabulary.from_text(text)
        self.text = text
        self.data = self.vocab.encode(text)
        # prepare.py: train_data = data[:int(n * 0.9)]
        cut = int(len(text) * train_fraction)
        self.train_fraction = train_fraction
        self.train, self.val = self.data[:cut], self.data[cut:]

    @classmethod
    def from_file(cls, path: PathLike, **kwargs) -> "CharCorpus":
        """Reads a UTF-8 text file (:func:`read_text_file`)."""
        return cls(read_text_file(path), source=str(path), **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return self.data.numel()

    def encode(self, text: str) -> Tensor:
        return self.vocab.encode(text)

    def decode(self, ids: Union[Tensor, Iterable[int]]) -> str:
        return self.vocab.decode(ids)

    def split(self, name: str) -> Tensor:
        """The ids of split ``"train"`` or ``"val"``."""
        check_choice("split", name, SPLITS)
        return self.train if name == "train" else self.val

    def batch(self, split: str, batch_size: int, block_size: int,
              generator: Optional[torch.Generator] = None,
              device: Union[str, torch.device, None] = None
              ) -> Tuple[Tensor, Tensor]:
        """``(x, y)``, two ``[batch_size, block_size]`` long tensors: random
        blocks of the split and the same blocks shifted by one (nanoGPT's
        ``get_batch``; the starts are ``torch.randint(n - block_size,
        (batch_size,), generator=generator)``)."""
        data = self.split(split)
        for name, value in (("batch_size", batch_size),
                            ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got "
                                 f"{value!r}")
        if data.numel() <= block_size:
            raise ValueError(
                f"the {split} split of {self.source} has {data.numel()} "
                f"characters; a block of block_size={block_size} plus its "
                f"shifted target needs at least {block_size + 1}")
        starts = torch.randint(data.numel() - block_size, (batch_size, ),
                               generator=generator)
        # one gather of the B x (T + 1) windows instead of B slices
        window = data[starts[:, None] + torch.arange(block_size + 1)]
        x, y = window[:, :-1], window[:, 1:]
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self):,} characters, "
                f"{self.vocab_size} distinct, train {self.train.numel():,} /"
                f" val {self.val.numel():,}, from {self.source})")


def load_corpus(name_or_path: PathLike = "shakespeare-char",
                root: Optional[PathLike] = None,
                mirror: Optional[PathLike] = None,
                **kwargs) -> CharCorpus:
    """A named corpus (:data:`CORPORA`, found by :func:`find_corpus`) or any
    UTF-8 text file by path; ``kwargs`` go to :class:`CharCorpus`."""
    name = os.fspath(name_or_path)
    if name in CORPORA:
        return CharCorpus.from_file(find_corpus(name, root, mirror),
                                    **kwargs)
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataSourceError(
            f"corpus {name!r} is neither a named corpus (one of "
            f"{', '.join(map(repr, CORPORA))}) nor a text file (no file at "
            f"{path})")
    return CharCorpus.from_file(path, **kwargs)


__all__ = ["CORPORA", "CharVocabulary", "CharCorpus", "find_corpus",
           "load_corpus", "read_text_file"]
