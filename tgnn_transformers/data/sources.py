"""Data sets through PyG's and ogb's own dataset classes, with an offline
mirror.

Two locations matter:

* the **data root** (``root=`` argument, else ``TGNN_DATA_ROOT``, else
  ``~/.cache/tgnn_transformers/data``): where the dataset classes keep their
  ``raw/`` and ``processed/`` folders;
* the **mirror** (``mirror=`` argument, else ``TGNN_DATA_MIRROR``): a
  read-only folder laid out like the data root
  (``planetoid/Cora/raw/ind.cora.x``, ``tudataset/MUTAG/raw/MUTAG_A.txt``,
  ``linkx/cornell5/raw/data.mat``,
  ``heterophilous/minesweeper/raw/minesweeper.npz``, ``ogb/ogbn_arxiv/...``).
  When it is set, raw files are copied from it instead of downloaded.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union


from ..functional._checks import check_choice

#: The environment variable naming the data root (where data sets are
#: processed and kept).
ROOT_ENV = "TGNN_DATA_ROOT"
#: The environment variable naming the offline mirror the data sets are
#: copied from.
MIRROR_ENV = "TGNN_DATA_MIRROR"
PathLike = Union[str, os.PathLike]


class DataSourceError(RuntimeError):
    """A data set could not be found, copied or read."""


def data_root(root: Optional[PathLike] = None) -> Path:
    """The data root: ``root``, else ``$TGNN_DATA_ROOT``, else
    ``~/.cache/tgnn_transformers/data``."""
    if root is None:
        root = os.environ.get(ROOT_ENV) or (Path.home() / ".cache" /
                                            "tgnn_transformers" / "data")
    return Path(root).expanduser()


def data_mirror(mirror: Optional[PathLike] = None) -> Optional[Path]:
    """The offline mirror: ``mirror``, else ``$TGNN_DATA_MIRROR``, else
    ``None`` (download as usual)."""
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    return Path(mirror).expanduser() if mirror is not None else None


@dataclass(frozen=True)
class Source:
    """Where one data set lives below the root/mirror, how to load it, and
    how its protocol scores and splits it."""
    family: str  # planetoid | tudataset | linkx | heterophilous | ogb
    name: str  # the name the dataset class takes
    folder: str  # path below the root holding raw/ (or ogb's tree)
    raw_files: tuple  # files that must exist below ``folder``
    kind: str  # node | graph
    metric: str = "accuracy"
    """what its protocol reports: ``"accuracy"``, or ``"roc_auc"`` for the
    binary heterophilous graphs (Platonov et al. 2023), whose classes are
    imbalanced; the metric belongs to the data set, not the model"""
    splits: int = 1
    """train/val/test splits of its protocol (node data sets): fixed ones
    in its files (the heterophilous graphs: 10), or random ones seeded by
    their index (the LINKX graphs, which ship none: 5, as in Lim et al.
    2021)"""
    random_splits: bool = False
    """its splits are drawn at random, seeded by their index (any index
    is one), rather than read from its files"""


def _planetoid(name: str) -> Source:
    low = name.lower()
    parts = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
    return Source("planetoid", name, f"planetoid/{name}",
                  tuple(f"raw/ind.{low}.{p}" for p in parts), "node")


def _tu(name: str) -> Source:
    return Source("tudataset", name, f"tudataset/{name}",
                  (f"raw/{name}_A.txt", f"raw/{name}_graph_indicator.txt",
                   f"raw/{name}_graph_labels.txt"), "graph")


def _linkx(name: str) -> Source:
    return Source("linkx", name, f"linkx/{name}", ("raw/data.mat", ), "node",
                  splits=5, random_splits=True)


def _heterophilous(name: str, metric: str) -> Source:
    # HeterophilousGraphDataset keeps <root>/<name, lower case, "_" for
    # "-">/raw/<that name>.npz.
    low = name.lower().replace("-", "_")
    return Source("heterophilous", name, f"heterophilous/{low}",
                  (f"raw/{low}.npz", ), "node", metric=metric, splits=10)


def _ogb(name: str) -> Source:
    folder = name.replace("-", "_")
    return Source("ogb", name, f"ogb/{folder}",
                  ("raw/edge.csv.gz", "raw/node-label.csv.gz"), "node")


#: Every graph data set by name: where its raw files lie in the mirror and
#: the data root, and the task kind it serves.
SOURCES: Dict[str, Source] = {
    "cora": _planetoid("Cora"),
    "citeseer": _planetoid("CiteSeer"),
    "pubmed": _planetoid("PubMed"),
    "mutag": _tu("MUTAG"),
    "proteins": _tu("PROTEINS"),
    "cornell5": _linkx("cornell5"),
    "penn94": _linkx("penn94"),
    "amherst41": _linkx("amherst41"),
    "johnshopkins55": _linkx("johnshopkins55"),
    "reed98": _linkx("reed98"),
    "roman-empire": _heterophilous("Roman-empire", "accuracy"),
    "amazon-ratings": _heterophilous("Amazon-ratings", "accuracy"),
    "minesweeper": _heterophilous("Minesweeper", "roc_auc"),
    "tolokers": _heterophilous("Tolokers", "roc_auc"),
    "questions": _heterophilous("Questions", "roc_auc"),
    "ogbn-arxiv": _ogb("ogbn-arxiv"),
    "ogbn-products": _ogb("ogbn-products"),
}


def get_source(name: str) -> Source:
    return SOURCES[check_choice("dataset", name.lower(), sorted(SOURCES))]


#: ``--dataset text:PATH``: a corpus read from any UTF-8 text file.
TEXT_FILE_PREFIX = "text:"


def datasets_of(kind: str) -> Tuple[str, ...]:
    """The names of the data sets of one kind: ``"node"`` and ``"graph"``
    (PyG / ogb graphs), ``"text"`` (sentence classification), ``"corpus"``
    (character corpora for language modelling; any text file is one too,
    as ``text:PATH``)."""
    from .text import TEXT_DATASETS
    if kind == "text":
        return TEXT_DATASETS
    if kind == "corpus":
        from .corpus import CORPORA
        return tuple(CORPORA)
    return tuple(sorted(k for k, s in SOURCES.items() if s.kind == kind))


def dataset_key(name: str) -> str:
    """A data set's name as configurations record it: lower case, except
    the path of a ``text:PATH`` corpus, which is kept as given."""
    return name if name.startswith(TEXT_FILE_PREFIX) else name.lower()


def check_dataset(kind: str, name: str, owner: str) -> None:
    """Raises a ``ValueError`` when ``name`` is not a data set of ``kind``
    (``--task graph --dataset cora``), naming ``owner`` and the ones that
    are; a ``text:PATH`` corpus must name an existing file."""
    if kind == "corpus" and name.startswith(TEXT_FILE_PREFIX):
        path = Path(name[len(TEXT_FILE_PREFIX):]).expanduser()
        if not path.is_file():
            raise ValueError(f"dataset {name!r}: no text file at {path} "
                             f"({TEXT_FILE_PREFIX}PATH reads a corpus from a"
                             f" UTF-8 text file)")
        return
    if name.lower() in datasets_of(kind):
        return
    known = {k: s.kind for k, s in SOURCES.items()}
    known.update((k, "text") for k in datasets_of("text"))
    known.update((k, "corpus") for k in datasets_of("corpus"))
    fitting = ", ".join(datasets_of(kind))
    if kind == "corpus":
        fitting += f", or {TEXT_FILE_PREFIX}PATH (any UTF-8 text file)"
    if name.lower() not in known:
        raise ValueError(f"unknown dataset {name!r}; {owner} needs one of: "
                         f"{fitting}")
    raise ValueError(f"dataset {name!r} is a {known[name.lower()]} data "
                     f"set, but {owner} needs one of: {fitting}")


def _missing(base: Path, files) -> List[str]:
    return [f for f in files if not (base / f).is_file()]


def stage_from_mirror(source: Source, root: Path,
                      mirror: Optional[Path]) -> None:
    """Copies the data set's files from the mirror into the root (only what
    is not there yet).  Raises :class:`DataSourceError` naming the missing
    file, the mirror and the variable when the mirror lacks them."""
    target = root / source.folder
    if mirror is None or not _missing(target, source.raw_files):
        return
    origin = mirror / source.folder
    missing = _missing(origin, source.raw_files)
    if missing:
        raise DataSourceError(
            f"{source.name}: raw file {origin / missing[0]} not found in the "
            f"data mirror {mirror} (set {MIRROR_ENV} to a folder with "
            f"{source.folder}/{missing[0]}, or unset it to download)")
    for path in origin.rglob("*"):
        if path.is_file() and "processed" not in path.relative_to(
                origin).parts:
            dest = target / path.relative_to(origin)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".partial")
                shutil.copyfile(path, tmp)
                os.replace(tmp, dest)


def _load_ogb(source: Source, root: Path):
    from .ogb import load_ogb_node_dataset
    return load_ogb_node_dataset(source.name, root / "ogb")


def _construct(source: Source, root: Path):
    from torch_geometric.datasets import (HeterophilousGraphDataset,
                                          LINKXDataset, Planetoid, TUDataset)
    if source.family == "heterophilous":
        return HeterophilousGraphDataset(str(root / "heterophilous"),
                                         source.name)
    if source.family == "planetoid":
        return Planetoid(str(root / "planetoid"), source.name)
    if source.family == "tudataset":
        return TUDataset(str(root / "tudataset"), source.name)
    if source.family == "linkx":
        return LINKXDataset(str(root / "linkx"), source.name)
    return _load_ogb(source, root)


def load_dataset(name: str, root: Optional[PathLike] = None,
                 mirror: Optional[PathLike] = None):
    """Loads a data set by name (``cora``, ``citeseer``, ``pubmed``,
    ``mutag``, ``proteins``, ``cornell5`` and the other LINKX Facebook
    graphs, the heterophilous graphs ``minesweeper``, ``tolokers``,
    ``roman-empire``, ``amazon-ratings``, ``questions``, ``ogbn-arxiv``,
    ``ogbn-products``) with its dataset class.

    Raw files come from the mirror when one is set.  Errors name the file,
    the mirror path and the variable to set.
    """
    source = get_source(name)
    root, mirror = data_root(root), data_mirror(mirror)
    stage_from_mirror(source, root, mirror)
    try:
        return _construct(source, root)
    except DataSourceError:
        raise
    except Exception as exc:  # corrupt or truncated raw files
        where = root / source.folder / "raw"
        hint = (f"copied from the data mirror {mirror} ({MIRROR_ENV})"
                if mirror is not None else
                f"no mirror set: set {MIRROR_ENV} to an offline copy")
        shutil.rmtree(root / source.folder / "processed", ignore_errors=True)
        raise DataSourceError(
            f"{source.name}: could not read the raw files in {where} "
            f"({hint}): {type(exc).__name__}: {exc}. Delete {where} to copy "
            "them again.") from exc
