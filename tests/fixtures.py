"""Small data sets written in the exact upstream file formats, for the
sources that cannot be downloaded here (PubMed, OGB); and a wait for a
training process's checkpoint."""
import gzip
import pickle
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def write_planetoid(folder: Path, name: str, num_nodes: int = 600,
                    num_features: int = 5, num_classes: int = 3,
                    seed: int = 0) -> None:
    """``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`` as the
    Planetoid repository ships them (pickled scipy / numpy objects)."""
    rng = np.random.default_rng(seed)
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    feats = sp.csr_matrix(rng.random((num_nodes, num_features)) > 0.5,
                          dtype=np.float32)
    labels = np.eye(num_classes)[rng.integers(0, num_classes, num_nodes)]
    # PyG takes the 500 nodes after the training nodes for validation.
    n_train, n_test = 20, 50
    n_all = num_nodes - n_test
    objects = {
        "x": feats[:n_train], "y": labels[:n_train],
        "allx": feats[:n_all], "ally": labels[:n_all],
        "tx": feats[n_all:], "ty": labels[n_all:],
        "graph": {i: [int(j) for j in rng.integers(0, num_nodes, 3)]
                  for i in range(num_nodes)},
    }
    for key, obj in objects.items():
        with open(raw / f"ind.{name}.{key}", "wb") as f:
            pickle.dump(obj, f)
    (raw / f"ind.{name}.test.index").write_text(
        "\n".join(str(i) for i in range(n_all, num_nodes)) + "\n")


def _csv_gz(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        for row in rows:
            f.write(",".join(str(v) for v in np.atleast_1d(row)) + "\n")


def write_ogbn_arxiv(folder: Path, num_nodes: int = 40, num_features: int = 8,
                     num_classes: int = 40, seed: int = 0) -> None:
    """The ``ogbn_arxiv`` folder as OGB's zip unpacks it: ``raw/*.csv.gz``
    (no headers) and ``split/time/{train,valid,test}.csv.gz``."""
    rng = np.random.default_rng(seed)
    edges = rng.integers(0, num_nodes, (3 * num_nodes, 2))
    raw = folder / "raw"
    _csv_gz(raw / "edge.csv.gz", edges)
    _csv_gz(raw / "num-node-list.csv.gz", [num_nodes])
    _csv_gz(raw / "num-edge-list.csv.gz", [len(edges)])
    _csv_gz(raw / "node-feat.csv.gz",
            rng.standard_normal((num_nodes, num_features)).round(4))
    _csv_gz(raw / "node_year.csv.gz", rng.integers(2000, 2020, num_nodes))
    _csv_gz(raw / "node-label.csv.gz", rng.integers(0, num_classes,
                                                    num_nodes))
    perm = rng.permutation(num_nodes)
    a, b = int(0.6 * num_nodes), int(0.8 * num_nodes)
    for name, idx in (("train", perm[:a]), ("valid", perm[a:b]),
                      ("test", perm[b:])):
        _csv_gz(folder / "split" / "time" / f"{name}.csv.gz", np.sort(idx))


def write_heterophilous(folder: Path, name: str, num_nodes: int = 60,
                        num_features: int = 4, num_classes: int = 2,
                        num_splits: int = 10, seed: int = 0) -> None:
    """``raw/<name>.npz`` as yandex-research/heterophilous-graphs ships it
    (the file PyG's ``HeterophilousGraphDataset`` reads): float32
    ``node_features`` ``[N, F]``, int64 ``node_labels`` ``[N]``, int64
    ``edges`` ``[E, 2]`` (each undirected edge once), and bool
    ``train_masks`` / ``val_masks`` / ``test_masks`` ``[splits, N]``, 50 /
    25 / 25 % of the nodes, disjoint."""
    rng = np.random.default_rng(seed)
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    src = rng.integers(0, num_nodes, 3 * num_nodes)
    dst = rng.integers(0, num_nodes, 3 * num_nodes)
    keep = src < dst
    edges = np.unique(np.stack([src[keep], dst[keep]], 1), axis=0)
    masks = {key: np.zeros((num_splits, num_nodes), dtype=bool)
             for key in ("train_masks", "val_masks", "test_masks")}
    a, b = num_nodes // 2, (3 * num_nodes) // 4
    for split in range(num_splits):
        perm = rng.permutation(num_nodes)
        masks["train_masks"][split, perm[:a]] = True
        masks["val_masks"][split, perm[a:b]] = True
        masks["test_masks"][split, perm[b:]] = True
    np.savez(raw / f"{name}.npz",
             node_features=rng.standard_normal(
                 (num_nodes, num_features)).astype(np.float32),
             node_labels=rng.integers(0, num_classes, num_nodes).astype(
                 np.int64),
             edges=edges.astype(np.int64), **masks)


def wait_for_checkpoint(process, checkpoint: Path, epoch: int,
                        timeout: float = 300.0) -> None:
    """Returns once ``process`` (a ``tgnn train`` subprocess) has written
    ``checkpoint`` at ``epoch`` or later, or has ended, or ``timeout``
    seconds have passed (the caller asserts which)."""
    from tgnn_transformers.train.io import CheckpointError, load_checkpoint
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if load_checkpoint(checkpoint)["epoch"] >= epoch:
                return
        except CheckpointError:
            pass  # not written yet
        time.sleep(0.05)
