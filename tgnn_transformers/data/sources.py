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
  When it is set, raw files are copied from it instead of downloaded, and
  copied again when the mirror's file changes (size or modification time).

What a data set class derives from its raw files (PyG's ``processed/``
folder) is tied to them: :func:`load_dataset` stores a fingerprint of the
raw files (size, modification time, SHA-256) in ``processed/`` and
processes them again when they change.  A loaded data set is checked
against the facts its upstream files are known to hold (:attr:`Source.facts`:
node, edge, graph and class counts, split sizes) and for what every
data set needs (non-empty splits, one label per graph), so a damaged or
truncated raw file raises :class:`DataSourceError` rather than training on
part of the data.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union


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
    facts: Mapping[str, int] = field(default_factory=dict, hash=False,
                                     compare=False)
    """what the upstream files hold, checked after every load:
    ``num_nodes``, ``num_edges``, ``num_graphs``, ``num_classes`` and the
    ``train``/``val``/``test`` split sizes (labelled nodes), where known"""


def _planetoid(name: str, **facts: int) -> Source:
    low = name.lower()
    parts = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
    return Source("planetoid", name, f"planetoid/{name}",
                  tuple(f"raw/ind.{low}.{p}" for p in parts), "node",
                  facts=facts)


def _tu(name: str, **facts: int) -> Source:
    return Source("tudataset", name, f"tudataset/{name}",
                  (f"raw/{name}_A.txt", f"raw/{name}_graph_indicator.txt",
                   f"raw/{name}_graph_labels.txt"), "graph", facts=facts)


def _linkx(name: str, **facts: int) -> Source:
    return Source("linkx", name, f"linkx/{name}", ("raw/data.mat", ), "node",
                  splits=5, random_splits=True, facts=facts)


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


#: Every graph data set, by name.  ``facts`` are given for the data sets
#: whose upstream files the offline mirror holds (each is checked against
#: them in ``tests/test_hardening.py``); the others get the generic checks.
SOURCES: Dict[str, Source] = {
    "cora": _planetoid("Cora", num_nodes=2708, num_edges=10556,
                       num_classes=7, train=140, val=500, test=1000),
    "citeseer": _planetoid("CiteSeer", num_nodes=3327, num_edges=9104,
                           num_classes=6, train=120, val=500, test=1000),
    "pubmed": _planetoid("PubMed"),
    "mutag": _tu("MUTAG", num_graphs=188, num_classes=2),
    "proteins": _tu("PROTEINS", num_graphs=1113, num_classes=2),
    "cornell5": _linkx("cornell5", num_nodes=18660, num_edges=1581554),
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


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def stage_from_mirror(source: Source, root: Path,
                      mirror: Optional[Path]) -> None:
    """Copies the data set's files from the mirror into the root: what is
    not there yet, and what differs from the mirror's file in size or
    modification time (a copy keeps the mirror's time, so a file fixed in
    the mirror is copied again).  Raises :class:`DataSourceError` naming
    the missing file, the mirror and the variable when the mirror lacks
    them."""
    if mirror is None:
        return
    target = root / source.folder
    origin = mirror / source.folder
    missing = _missing(origin, source.raw_files)
    if missing:
        if not _missing(target, source.raw_files):
            return  # staged before; the mirror no longer has it
        raise DataSourceError(
            f"{source.name}: raw file {origin / missing[0]} not found in the "
            f"data mirror {mirror} (set {MIRROR_ENV} to a folder with "
            f"{source.folder}/{missing[0]}, or unset it to download)")
    for path in origin.rglob("*"):
        if not path.is_file() or "processed" in path.relative_to(
                origin).parts:
            continue
        dest = target / path.relative_to(origin)
        stat = path.stat()
        if dest.exists() and _same_file(dest.stat(), stat):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.copyfile(path, tmp)
        os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.replace(tmp, dest)


#: Where :func:`load_dataset` keeps the fingerprint of the raw files that
#: ``processed/`` was made from.
FINGERPRINT_FILE = "tgnn_raw_fingerprint.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: The folders of a data set that hold what the package derives from its
#: raw files (PyG's ``processed/``, the cached graph encodings).
DERIVED_FOLDERS = ("processed", "encodings")


def _raw_paths(folder: Path) -> List[Path]:
    """The raw files of a data set folder: everything but the derived
    folders (:data:`DERIVED_FOLDERS`) and ogb's release marker (written by
    the loader)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and
                  not set(p.relative_to(folder).parts) & set(DERIVED_FOLDERS)
                  and not p.name.startswith("RELEASE_v"))


def raw_fingerprint(folder: Path,
                    known: Optional[Mapping[str, Any]] = None
                    ) -> Dict[str, Any]:
    """``{relative path: [size, mtime_ns, sha256]}`` of the raw files below
    ``folder``.  A file whose size and modification time equal its entry in
    ``known`` keeps that entry's hash (as git's index does), so checking an
    unchanged folder reads no file."""
    known = known or {}
    out: Dict[str, Any] = {}
    for path in _raw_paths(folder):
        name = path.relative_to(folder).as_posix()
        stat = path.stat()
        entry = known.get(name)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            out[name] = list(entry)
        else:
            out[name] = [stat.st_size, stat.st_mtime_ns, _sha256(path)]
    return out


def _read_fingerprint(path: Path) -> Optional[Dict[str, Any]]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def current_fingerprint(folder: Path) -> Dict[str, Any]:
    """:func:`raw_fingerprint` of a data set folder, reusing the hashes of
    the fingerprint ``processed/`` records (no file is read when nothing
    changed)."""
    stored = _read_fingerprint(folder / "processed" / FINGERPRINT_FILE)
    valid = stored is not None and all(
        isinstance(v, list) and len(v) == 3 for v in stored.values())
    return raw_fingerprint(folder, stored if valid else None)


def _drop_stale_processed(source: Source, root: Path) -> Dict[str, Any]:
    """Removes ``processed/`` unless it records the raw files as they are
    now (a raw file changed, or it predates fingerprints); returns the raw
    files' fingerprint."""
    folder = root / source.folder
    processed = folder / "processed"
    stored = _read_fingerprint(processed / FINGERPRINT_FILE)
    hashes = {k: v[2] for k, v in (stored or {}).items()
              if isinstance(v, list) and len(v) == 3}
    now = current_fingerprint(folder)
    if processed.exists() and (stored is None or hashes != {
            k: v[2] for k, v in now.items()}):
        shutil.rmtree(processed, ignore_errors=True)
    return now


def _write_fingerprint(source: Source, root: Path,
                       fingerprint: Dict[str, Any]) -> None:
    processed = root / source.folder / "processed"
    if not processed.is_dir():
        return
    tmp = processed / (FINGERPRINT_FILE + ".partial")
    tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    os.replace(tmp, processed / FINGERPRINT_FILE)


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


def _split_sizes(data, split: Optional[Mapping[str, Any]]) -> Dict[str, int]:
    """Labelled nodes of each split (the first column of multi-split
    masks), from the masks or from ogb's split indices."""
    if split is not None:
        return {"train": int(split["train"].numel()),
                "val": int(split["valid"].numel()),
                "test": int(split["test"].numel())}
    sizes = {}
    labelled = data.y.view(-1) >= 0 if data.y is not None else None
    for name in ("train", "val", "test"):
        mask = data.get(f"{name}_mask")
        if mask is None:
            continue
        if mask.dim() == 2:
            mask = mask[:, 0]
        if labelled is not None and labelled.numel() == mask.numel():
            mask = mask & labelled
        sizes[name] = int(mask.sum())
    return sizes


def check_loaded(source: Source, loaded) -> Optional[str]:
    """What is wrong with a loaded data set (``None`` if nothing): the
    generic checks (nodes, one label per node or graph, non-empty splits)
    and :attr:`Source.facts`."""
    found: Dict[str, int] = {}
    if source.kind == "graph":
        dataset = loaded
        found["num_graphs"] = len(dataset)
        if len(dataset) == 0:
            return "it holds no graphs"
        y = dataset._data.y
        if y is None or y.size(0) != len(dataset):
            return (f"it has {0 if y is None else y.size(0)} graph labels "
                    f"for {len(dataset)} graphs")
        found["num_classes"] = int(dataset.num_classes)
    else:
        dataset, split = (loaded[0], loaded[1]) if isinstance(
            loaded, tuple) else (loaded, None)
        data = dataset[0]
        found["num_nodes"] = int(data.num_nodes or 0)
        found["num_edges"] = int(data.num_edges)
        if found["num_nodes"] == 0:
            return "it holds no nodes"
        if data.y is None or data.y.size(0) != data.num_nodes:
            return (f"it has {0 if data.y is None else data.y.size(0)} node "
                    f"labels for {data.num_nodes} nodes")
        found["num_classes"] = int(dataset.num_classes)
        sizes = _split_sizes(data, split)
        empty = [name for name, size in sizes.items() if size == 0]
        if empty:
            return f"its {empty[0]} split is empty"
        found.update(sizes)
    for name, expected in source.facts.items():
        if found.get(name, expected) != expected:
            what = _FACT_WORDS.get(name, name)
            return (f"it holds {found[name]:,} {what} where the upstream "
                    f"files hold {expected:,}")
    return None


_FACT_WORDS = {"num_nodes": "nodes", "num_edges": "edges",
               "num_graphs": "graphs", "num_classes": "classes",
               "train": "training nodes", "val": "validation nodes",
               "test": "test nodes"}


def load_dataset(name: str, root: Optional[PathLike] = None,
                 mirror: Optional[PathLike] = None):
    """Loads a data set by name (``cora``, ``citeseer``, ``pubmed``,
    ``mutag``, ``proteins``, ``cornell5`` and the other LINKX Facebook
    graphs, the heterophilous graphs ``minesweeper``, ``tolokers``,
    ``roman-empire``, ``amazon-ratings``, ``questions``, ``ogbn-arxiv``,
    ``ogbn-products``) with its dataset class.

    Raw files come from the mirror when one is set.  ``processed/`` is
    made again when the raw files changed since it was made.  Errors name
    the file, the mirror path and the variable to set; a data set that
    loads but does not hold what its upstream files hold (a damaged or
    truncated file: see :func:`check_loaded`) raises
    :class:`DataSourceError` too.
    """
    source = get_source(name)
    root, mirror = data_root(root), data_mirror(mirror)
    stage_from_mirror(source, root, mirror)
    before = _drop_stale_processed(source, root)
    where = root / source.folder / "raw"
    hint = (f"copied from the data mirror {mirror} ({MIRROR_ENV})"
            if mirror is not None else
            f"no mirror set: set {MIRROR_ENV} to an offline copy")
    fix = (f"Fix the mirror's copy in {mirror / source.folder} (a changed "
           "file is copied again)" if mirror is not None else
           f"Delete {where} to download them again")
    try:
        loaded = _construct(source, root)
    except (DataSourceError, ImportError):
        raise
    except Exception as exc:  # corrupt or truncated raw files
        shutil.rmtree(root / source.folder / "processed", ignore_errors=True)
        raise DataSourceError(
            f"{source.name}: could not read the raw files in {where} "
            f"({hint}): {type(exc).__name__}: {exc}. {fix}.") from exc
    problem = check_loaded(source, loaded)
    if problem is not None:
        shutil.rmtree(root / source.folder / "processed", ignore_errors=True)
        raise DataSourceError(
            f"{source.name}: the raw files in {where} ({hint}) are damaged "
            f"or incomplete: {problem}. {fix}.")
    _write_fingerprint(source, root,
                       raw_fingerprint(root / source.folder, before))
    return loaded
