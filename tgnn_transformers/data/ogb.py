"""OGB node property prediction through ``ogb``'s own loader, made to run
unattended and with ``torch.load(weights_only=True)`` (torch >= 2.6).

``ogb`` asks on standard input whether to re-download when a data folder has
no ``RELEASE_v<version>.txt`` marker, and loads its processed file with
``torch.load`` defaults that reject PyG ``Data`` objects under torch's
``weights_only`` loading.  Both are handled here rather than patched inside
``ogb``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch


@contextlib.contextmanager
def _trusted_torch_load():
    """``torch.load`` with ``weights_only=False`` for files this process
    wrote itself (ogb's processed cache)."""
    original = torch.load

    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


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
    with _trusted_torch_load():
        dataset = PygNodePropPredDataset(name, root=str(root))
        split = dataset.get_idx_split()
    return dataset, split, Evaluator(name)
