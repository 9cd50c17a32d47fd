"""Importing the package changes no process-wide state, and what used to be
set up at import (the CSR warning filter, the dense-size limit, ogb's
``torch.load``) now happens where it is used, leaving nothing behind."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("functional", "nn", "transforms", "data", "models", "train",
               "cli")


def _run(code: str) -> dict:
    """Runs ``code`` in a fresh interpreter (repository on the path) and
    returns the JSON object it prints last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_changes_no_global_state():
    result = _run(f"""
        import importlib, json, os, pkgutil, warnings
        import torch
        # third-party imports are not ours to judge: load them first
        import torch_geometric, torch_geometric.data, torch_geometric.utils

        def state():
            return {{
                "filters": [repr(f) for f in warnings.filters],
                "torch_load": id(torch.load),
                "serialization_load": id(torch.serialization.load),
                "environ": dict(os.environ),
                "threads": torch.get_num_threads(),
            }}

        before = state()
        import tgnn_transformers
        for sub in {SUBPACKAGES!r}:
            importlib.import_module("tgnn_transformers." + sub)
        modules = [m.name for m in pkgutil.walk_packages(
            tgnn_transformers.__path__, "tgnn_transformers.")]
        for name in modules:
            importlib.import_module(name)
        after = state()
        print(json.dumps({{"before": before, "after": after,
                          "modules": modules}}))
    """)
    before, after = result["before"], result["after"]
    for sub in SUBPACKAGES:
        assert f"tgnn_transformers.{sub}" in result["modules"]
    assert after["filters"] == before["filters"]
    assert after["torch_load"] == before["torch_load"]
    assert after["serialization_load"] == before["serialization_load"]
    assert after["environ"] == before["environ"]
    assert after["threads"] == before["threads"]


def test_sparse_attention_shows_no_csr_beta_warning_and_sets_no_filter():
    # A fresh process: torch emits the warning once, at the first CSR tensor.
    result = _run("""
        import json, warnings
        import torch
        from tgnn_transformers.functional import edge_attention
        from tgnn_transformers.functional.sparse_ops import graph_index

        filters = [repr(f) for f in warnings.filters]
        edge_index = torch.tensor([[0, 1, 2, 2], [1, 2, 0, 1]])
        q = torch.randn(3, 2, 4, requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                edge_attention(q, q, q, edge_index,
                               backend="sparse").out.sum().backward()
        # torch's warn-once repeats now; the CSR tensors built here stay
        # silent (torch's own CSR results, e.g. of sampled_addmm, do not)
        index = graph_index(edge_index, 3, 3)
        torch.set_warn_always(True)
        with warnings.catch_warnings(record=True) as caught_always:
            warnings.simplefilter("always")
            for _ in range(2):
                index.csr(torch.ones(4))
                index.csc_transposed(torch.ones(4))
        torch.set_warn_always(False)
        print(json.dumps({
            "caught": [str(w.message) for w in caught + caught_always],
            "filters_unchanged": [repr(f) for f in warnings.filters]
            == filters}))
    """)
    assert not [m for m in result["caught"] if "beta state" in m]
    assert result["filters_unchanged"]


def test_dense_limit_is_read_from_the_environment_when_used(monkeypatch):
    from tgnn_transformers.functional.backends import dense as attention
    monkeypatch.delenv("TGNN_DENSE_MAX_BYTES", raising=False)
    assert attention.dense_masked_max_bytes() == \
        attention.DENSE_MASKED_MAX_BYTES
    monkeypatch.setenv("TGNN_DENSE_MAX_BYTES", "12345")
    assert attention.dense_masked_max_bytes() == 12345
    for bad in ("lots", "-1", "1.5e9"):
        monkeypatch.setenv("TGNN_DENSE_MAX_BYTES", bad)
        with pytest.raises(ValueError,
                           match=f"TGNN_DENSE_MAX_BYTES.*{bad!r}"):
            attention.dense_masked_max_bytes()


def test_dense_limit_from_the_environment_makes_auto_fall_back(monkeypatch):
    from torch_geometric.data import Batch, Data
    from tgnn_transformers.functional import edge_attention
    from tgnn_transformers.transforms import SequenceToGraph
    to_graph = SequenceToGraph("full")  # a ragged batch: needs a key mask
    batch = Batch.from_data_list([to_graph(Data(x=torch.randn(n, 4)))
                                  for n in (6, 3)])
    q = torch.randn(9, 2, 4)
    monkeypatch.setenv("TGNN_DENSE_MAX_BYTES", "100")
    with pytest.raises(ValueError, match="TGNN_DENSE_MAX_BYTES=100"):
        edge_attention(q, q, q, batch.edge_index, batch=batch.batch,
                       backend="dense")
    monkeypatch.delenv("TGNN_DENSE_MAX_BYTES")
    edge_attention(q, q, q, batch.edge_index, batch=batch.batch,
                   backend="dense")


def test_ogb_load_leaves_torch_serialization_as_it_was(tmp_path,
                                                       monkeypatch):
    pytest.importorskip("ogb")
    from fixtures import write_ogbn_arxiv
    from tgnn_transformers.data.ogb import load_ogb_node_dataset
    root = tmp_path / "root"
    write_ogbn_arxiv(root / "ogbn_arxiv")
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("prompted"))
    import ogb.nodeproppred  # noqa: F401  (its imports may register globals)
    load, safe = torch.load, set(torch.serialization.get_safe_globals())
    for _ in range(2):  # process, then read the processed cache
        dataset, split, _ = load_ogb_node_dataset("ogbn-arxiv", root)
        assert dataset[0].num_nodes == 40 and split["test"].numel() == 8
        assert torch.load is load
        assert set(torch.serialization.get_safe_globals()) == safe
