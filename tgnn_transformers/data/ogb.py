"""OGB node property prediction through ``ogb``'s own loader, made to run
unattended and with ``torch.load(weights_only=True)`` (torch >= 2.6).

``ogb`` asks on standard input whether to re-download when a data folder has
no ``RELEASE_v<version>.txt`` marker, and loads its processed file with
``torch.load`` defaults, which under torch's ``weights_only`` loading reject
the PyG classes pickled in it.  Both are handled here rather than patched
inside ``ogb``: the marker is written, and the load runs inside torch's
scoped allow-list :func:`torch.serialization.safe_globals` naming exactly
those classes (nothing global changes; ``torch.load`` stays torch's).
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch


def _ogb_safe_globals():
    """The classes in ``ogb``'s processed file
    (``torch.save(self.collate([data]))``: a ``Data`` with its storage and
    attribute records, plus a dict of slice tensors), allowed for
    ``weights_only`` loading while the block runs.

    ``safe_globals`` removes what it was given on exit, so classes that are
    already allowed (PyG registers ``Data`` at import) are left out: they
    must stay allowed afterwards.
    """
    scoped = getattr(torch.serialization, "safe_globals", None)
    if scoped is None:  # torch < 2.5: weights_only is off by default
        return contextlib.nullcontext()
    from torch_geometric.data.data import Data, DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage
    allowed = torch.serialization.get_safe_globals()
    return scoped([cls for cls in (Data, DataEdgeAttr, DataTensorAttr,
                                   GlobalStorage) if cls not in allowed])


def _mark_release(name: str, root: Path) -> None:
    import pandas as pd
    import ogb.nodeproppred
    master = pd.read_csv(
        Path(ogb.nodeproppred.__file__).parent / "master.csv", index_col=0,
        keep_default_na=False)
    version = master[name]["version"]
    folder = root / name.replace("-", "_")
    marker = folder / f"RELEASE_v{version}.txt"
    if folder.is_dir() and not marker.exists():
        marker.write_text(f"# staged by tgnn_transformers, version "
                          f"{version}\n")


def load_ogb_node_dataset(name: str, root: Path):
    """``PygNodePropPredDataset(name, root)`` plus its split and evaluator,
    returned as ``(dataset, split_idx, evaluator)``."""
    try:
        from ogb.nodeproppred import Evaluator, PygNodePropPredDataset
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError("OGB data sets need the 'ogb' package: pip "
                          "install 'tgnn_transformers[ogb]'") from exc
    root = Path(root)
    _mark_release(name, root)
    with _ogb_safe_globals(), warnings.catch_warnings():
        # ogb's processing hands torch a read-only NumPy array of labels it
        # never writes to; torch's notice about it is not for our users.
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="The given NumPy array is not "
                                "writable")
        dataset = PygNodePropPredDataset(name, root=str(root))
        split = dataset.get_idx_split()
    return dataset, split, Evaluator(name)
