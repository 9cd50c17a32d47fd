"""Graph positional encodings of a data set, computed once and kept on disk
beside it in the data root."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ..transforms.positional import (ENCODING_VERSION,
                                     graph_positional_encoding)
from .sources import (PathLike, current_fingerprint, data_root,
                      get_source)

log = logging.getLogger("tgnn_transformers.data")

#: The folder below a data set's folder that holds its encodings.
ENCODINGS_FOLDER = "encodings"


def _raw_identity(folder: Path) -> List[List]:
    """``[relative path, size, sha256]`` of every raw file of ``folder``
    (the data set's identity: a changed file recomputes); the hashes come
    from the fingerprint :func:`~tgnn_transformers.data.load_dataset`
    keeps, so an unchanged data set reads no file."""
    return [[name, size, digest] for name, (size, _, digest)
            in sorted(current_fingerprint(folder).items())]


def encoding_cache_path(name: str, kind: str, dim: int,
                        root: Optional[PathLike] = None) -> Optional[Path]:
    """Where the ``kind`` encoding of width ``dim`` of data set ``name`` is
    cached: ``<root>/<data set folder>/encodings/<kind>-<dim>-<key>.pt``,
    ``key`` a digest of the settings (kind, width, the computation's
    version, PyG's version) and of the raw files (paths, sizes, contents).
    ``None`` when the data set has no raw files in the root to key on."""
    import torch_geometric
    folder = data_root(root) / get_source(name).folder
    identity = _raw_identity(folder)
    if not identity:
        return None
    settings = {"kind": kind, "dim": dim, "version": ENCODING_VERSION,
                "torch_geometric": torch_geometric.__version__,
                "raw": identity}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()
                         ).hexdigest()[:16]
    return folder / ENCODINGS_FOLDER / f"{kind}-{dim}-{key}.pt"


def positional_encodings(name: str, graphs: Sequence, kind: str, dim: int,
                         root: Optional[PathLike] = None) -> List[Tensor]:
    """One ``[n_i, dim]`` encoding per graph of data set ``name`` (``kind``
    ``"lap"`` or ``"rw"``, see
    :func:`~tgnn_transformers.transforms.graph_positional_encoding`), read
    from the cache at :func:`encoding_cache_path` or computed and written
    there (atomically).  ``graphs`` are the data set's graphs as loaded
    (PyG ``Data`` with ``edge_index`` and ``num_nodes``)."""
    path = encoding_cache_path(name, kind, dim, root)
    if path is not None and path.is_file():
        cached = torch.load(path, weights_only=True)
        if len(cached) == len(graphs) and all(
                pe.shape == (g.num_nodes, dim)
                for pe, g in zip(cached, graphs)):
            return cached
        log.warning("%s does not match the data set's graphs; computing "
                    "the encodings again", path)
    encodings = [graph_positional_encoding(g.edge_index, g.num_nodes, kind,
                                           dim) for g in graphs]
    if path is None:
        log.warning("%s: no raw files in the data root to key a cache on; "
                    "the %s encodings are computed but not cached", name,
                    kind)
        return encodings
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save(encodings, tmp)
    os.replace(tmp, path)
    return encodings


__all__ = ["positional_encodings", "encoding_cache_path", "ENCODINGS_FOLDER"]
