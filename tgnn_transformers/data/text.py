"""Sentence classification data sets as graphs: readers for SST-2, TREC and
R8 in their upstream raw layouts, a word vocabulary, and a dataset of
sentence graphs for any token pattern.

Raw files are looked up below the data root (``text/sst2/...``), then in the
offline mirror (``TGNN_DATA_MIRROR``), which is only read:

=========  ======================================  =====================
name       files                                   line format
=========  ======================================  =====================
``sst2``   ``text/sst2/stsa.binary.{train,dev,test}``  ``label sentence``
``trec``   ``text/trec/TREC.{train,test}.all``     ``LABEL:fine question``
                                                   (Latin-1; the 6 coarse
                                                   labels are used)
``r8``     ``text/r8/{train,test}.txt``            ``label<TAB>text``
=========  ======================================  =====================

SST-2 has a dev split; TREC and R8 hold out 10 % of their training split
for validation, drawn with a seed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch_geometric.data import InMemoryDataset

from ..functional._checks import check_choice
from .sources import (MIRROR_ENV, ROOT_ENV, DataSourceError, PathLike,
                      data_mirror, data_root)

#: name -> (folder, {split: file}, encoding)
TEXT_SOURCES: Dict[str, Tuple[str, Dict[str, str], str]] = {
    "sst2": ("text/sst2", {"train": "stsa.binary.train",
                           "val": "stsa.binary.dev",
                           "test": "stsa.binary.test"}, "utf-8"),
    "trec": ("text/trec", {"train": "TREC.train.all",
                           "test": "TREC.test.all"}, "latin-1"),
    "r8": ("text/r8", {"train": "train.txt", "test": "test.txt"}, "utf-8"),
}
#: The sentence classification data sets by name.
TEXT_DATASETS = tuple(TEXT_SOURCES)
#: Sentences of each raw split as the upstream files hold them: a split of
#: another size is a damaged, truncated or different file.
TEXT_FACTS: Dict[str, Dict[str, int]] = {
    "sst2": {"train": 6920, "val": 872, "test": 1821},
    "trec": {"train": 5452, "test": 500},
    "r8": {"train": 5485, "test": 2189},
}
HOLDOUT = 0.1  # share of train held out for validation without a dev split


def _find(name: str, file: str, root: Optional[PathLike],
          mirror: Optional[PathLike]) -> Path:
    folder = TEXT_SOURCES[name][0]
    base, mirror_path = data_root(root), data_mirror(mirror)
    candidates = [base / folder / file]
    if mirror_path is not None:
        candidates.append(mirror_path / folder / file)
    for path in candidates:
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in candidates)
    hint = (f"set {MIRROR_ENV} (or --mirror) to the folder holding "
            f"{folder}/{file}" if mirror_path is None else
            f"the mirror {mirror_path} ({MIRROR_ENV}) lacks {folder}/{file}")
    raise DataSourceError(f"{name}: raw file {file} not found at {where}; "
                          f"{hint}, or put it below the data root "
                          f"({ROOT_ENV})")


def _parse(name: str, line: str) -> Tuple[str, List[str]]:
    if name == "r8":
        label, _, text = line.partition("\t")
    else:
        label, _, text = line.partition(" ")
        if name == "trec":
            label = label.split(":", 1)[0]
    return label, text.lower().split()


def read_text_split(name: str, split: str, root: Optional[PathLike] = None,
                    mirror: Optional[PathLike] = None
                    ) -> Tuple[List[List[str]], List[str]]:
    """``(token lists, label strings)`` of one raw split (``"train"``,
    ``"test"``, and ``"val"`` for SST-2), lower-cased and split on
    whitespace."""
    check_choice("text data set", name, TEXT_SOURCES)
    files, encoding = TEXT_SOURCES[name][1], TEXT_SOURCES[name][2]
    if split not in files:
        raise ValueError(f"{name} has no raw {split!r} split; it has "
                         f"{', '.join(files)}")
    path = _find(name, files[split], root, mirror)
    text = _read_text(path, encoding)
    sentences, labels = [], []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line:
            continue
        label, tokens = _parse(name, line)
        if not label or not tokens:
            raise DataSourceError(f"{path}:{number}: expected a label "
                                  f"and text, got {line[:60]!r}")
        sentences.append(tokens)
        labels.append(label)
    expected = TEXT_FACTS.get(name, {}).get(split)
    if not sentences:
        raise DataSourceError(f"{path} holds no sentences (an empty file); "
                              "replace it with the upstream file")
    if expected is not None and len(sentences) != expected:
        raise DataSourceError(
            f"{path} holds {len(sentences):,} sentences where the upstream "
            f"{name} {split} split has {expected:,}: the file is damaged, "
            "truncated or another version; replace it with the upstream "
            "file")
    return sentences, labels


def _read_text(path: Path, encoding: str) -> str:
    """The file decoded; a byte that is not ``encoding`` raises a
    :class:`DataSourceError` naming the line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataSourceError(f"cannot read {path}: {exc.strerror or exc}") \
            from exc
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataSourceError(
            f"{path}:{line}: not {encoding} text (byte "
            f"{data[exc.start]:#04x} at offset {exc.start}); the file is "
            f"damaged or in another encoding: replace it with the upstream "
            "file") from None


@dataclass
class TextSplits:
    """The train/val/test sentences and integer labels of a data set."""
    name: str
    classes: List[str]
    splits: Dict[str, Tuple[List[List[str]], List[int]]] = field(
        default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_text_splits(name: str, root: Optional[PathLike] = None,
                     mirror: Optional[PathLike] = None, seed: int = 0,
                     limit: Optional[int] = None) -> TextSplits:
    """Reads a text data set: SST-2's own dev split, or 10 % of the training
    split held out (drawn with ``seed``) for TREC and R8.  Labels are
    numbered in sorted order of the training labels.  ``limit`` keeps the
    first ``limit`` sentences of each raw split (for quick tests)."""
    name = name.lower()
    check_choice("text data set", name, TEXT_SOURCES)
    raw = {s: read_text_split(name, s, root, mirror)
           for s in TEXT_SOURCES[name][1]}
    if limit is not None:
        raw = {s: (x[:limit], y[:limit]) for s, (x, y) in raw.items()}
    classes = sorted(set(raw["train"][1]))
    index = {c: i for i, c in enumerate(classes)}

    def encode(part):
        sentences, labels = part
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataSourceError(f"{name}: labels {unknown} are not in the "
                                  "training split")
        return sentences, [index[c] for c in labels]

    splits = {s: encode(p) for s, p in raw.items()}
    if "val" not in splits:
        sentences, labels = splits["train"]
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(sentences), generator=gen).tolist()
        cut = max(1, round(HOLDOUT * len(order)))
        pick = lambda ids: ([sentences[i] for i in ids],  # noqa: E731
                            [labels[i] for i in ids])
        splits["val"], splits["train"] = pick(order[:cut]), pick(order[cut:])
    return TextSplits(name, classes, splits)


class Vocabulary:
    """Words of the training split seen at least ``min_freq`` times, after
    the specials ``<pad>`` (0), ``<unk>`` (1), ``<cls>`` (2) and ``<span>``
    (3, the id of virtual span nodes); unknown words map to ``<unk>``."""

    SPECIALS = ("<pad>", "<unk>", "<cls>", "<span>")

    def __init__(self, words: Iterable[str]):
        self.itos = list(self.SPECIALS) + [w for w in words
                                           if w not in self.SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1,
              max_size: Optional[int] = None) -> "Vocabulary":
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(w for s in sentences for w in s)
        words = sorted((w for w, c in counts.items() if c >= min_freq),
                       key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size is not None else words)

    pad, unk, cls_id, span = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.stoi.get(w, self.unk) for w in tokens],
                            dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.itos[int(i)] for i in ids]

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"


class SentenceGraphDataset(InMemoryDataset):
    """Sentences as token graphs, one ``Data`` per sentence: ``x`` the token
    ids (``[CLS]`` first with ``add_cls``), ``y`` the label, ``position``
    the token positions, ``edge_index`` the ``pattern``'s edges (see
    :func:`~tgnn_transformers.transforms.sequence_to_graph`; virtual span
    nodes get the ``<span>`` id and are marked in ``virtual``), and
    ``length`` the number of tokens.

    Args:
        sentences: token lists.
        labels: integer labels.
        vocab: the :class:`Vocabulary` (built from the training split).
        pattern: any token pattern; ``**pattern_kwargs`` (``window``,
            ``num_global``, ...) as in ``sequence_to_graph``.
        max_length: tokens kept per sentence (``[CLS]`` included).
        add_cls: put a ``<cls>`` token first.
    """

    def __init__(self, sentences: Sequence[Sequence[str]],
                 labels: Sequence[int], vocab: Vocabulary,
                 pattern: str = "full", *, max_length: Optional[int] = None,
                 add_cls: bool = True, transform=None, **pattern_kwargs):
        from ..transforms.sequence import sequence_to_graph
        super().__init__(None, transform)
        if len(sentences) != len(labels):
            raise ValueError(f"{len(sentences)} sentences but "
                             f"{len(labels)} labels")
        graphs = []
        for tokens, label in zip(sentences, labels):
            ids = vocab.encode(tokens)
            if add_cls:
                ids = torch.cat([torch.tensor([vocab.cls_id]), ids])
            if max_length is not None:
                ids = ids[:max_length]
            if ids.numel() == 0:
                ids = torch.tensor([vocab.unk])
            g = sequence_to_graph(ids, pattern, virtual_token=vocab.span,
                                  **pattern_kwargs)
            if "virtual" not in g:
                g.virtual = torch.zeros(g.num_nodes, dtype=torch.bool)
            g.y = torch.tensor([int(label)])
            g.length = torch.tensor([ids.numel()])
            graphs.append(g)
        self.pattern = pattern
        self.data, self.slices = self.collate(graphs)

    @property
    def num_edges_total(self) -> int:
        return int(self._data.edge_index.size(1))


__all__ = ["TEXT_DATASETS", "TEXT_SOURCES", "TextSplits", "Vocabulary",
           "SentenceGraphDataset", "read_text_split", "load_text_splits"]
