"""Graph positional encodings: PyG's Laplacian-eigenvector and random-walk
transforms with fixed widths (against the eigen-equation, PyG's own output
and matrix powers written out), their on-disk cache keyed by settings and
raw files, the models' input stage (concatenated or added, sparse features
kept sparse, random Laplacian signs per graph in training) and ``--pe`` on
the node and graph tasks."""
import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import (AddLaplacianEigenvectorPE,
                                        AddRandomWalkPE)
from torch_geometric.utils import get_laplacian, to_undirected

from fixtures import write_heterophilous
from tgnn_transformers.cli import main
from tgnn_transformers.data import (encoding_cache_path, load_dataset,
                                    positional_encodings)
from tgnn_transformers.functional import hstack_features, to_sparse_csr
from tgnn_transformers.models import build_model
from tgnn_transformers.models.task_models import PositionalInput
from tgnn_transformers.transforms import (graph_positional_encoding,
                                          laplacian_pe, random_walk_pe)
from tgnn_transformers.transforms import positional as positional_module
from tgnn_transformers.train import resolve_config
from tgnn_transformers.train.recipes import node_recipe


def random_graph(n, degree=3, seed=0, directed=False):
    gen = torch.Generator().manual_seed(seed)
    # A ring keeps it connected; random chords on top.
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    extra = torch.randint(0, n, (2, degree * n), generator=gen)
    extra = extra[:, extra[0] != extra[1]]
    edge_index = torch.cat([ring, extra], 1)
    if directed:
        return torch.unique(edge_index, dim=1)
    return to_undirected(edge_index, num_nodes=n)


def sym_laplacian(edge_index, n):
    index, weight = get_laplacian(edge_index, normalization="sym",
                                  num_nodes=n)
    dense = torch.zeros(n, n, dtype=torch.float64)
    dense[index[0], index[1]] = weight.double()
    return dense


@pytest.mark.parametrize("n", [30, 150])  # PyG's dense and ARPACK paths
def test_laplacian_pe_solves_the_eigen_equation(n):
    edge_index = random_graph(n)
    pe = laplacian_pe(edge_index, n, 6).double()
    lap = sym_laplacian(edge_index, n)
    values = torch.linalg.eigvalsh(lap)
    for column in range(6):
        v = pe[:, column]
        assert v.norm() == pytest.approx(1.0, abs=1e-4)
        # L v = lambda_(column + 1) v: the non-trivial eigenvectors in order.
        residual = lap @ v - values[column + 1] * v
        assert residual.norm() < 1e-3
    # PyG's transform gives the same columns, up to their signs.
    with torch.random.fork_rng():
        theirs = AddLaplacianEigenvectorPE(6, attr_name="pe",
                                           is_undirected=True)(
            Data(edge_index=edge_index, num_nodes=n)).pe.double()
    cosine = (pe * theirs).sum(0).abs()
    torch.testing.assert_close(cosine, torch.ones(6, dtype=torch.float64),
                               atol=1e-3, rtol=0)


def test_laplacian_pe_is_reproducible_and_padded():
    edge_index = random_graph(150, seed=1)
    torch.manual_seed(123)
    first = laplacian_pe(edge_index, 150, 4)
    torch.manual_seed(456)
    assert torch.equal(laplacian_pe(edge_index, 150, 4), first)
    small = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    pe = laplacian_pe(small, 4, 8)
    assert pe.shape == (4, 8)
    assert (pe[:, 3:] == 0).all() and (pe[:, :3].norm(dim=0) > 0.99).all()
    assert laplacian_pe(torch.zeros(2, 0, dtype=torch.long), 1, 3).shape \
        == (1, 3)


def walk_reference(edge_index, n, steps):
    """diag((D^-1 A)^t), t = 1..steps, by dense float64 matrix powers."""
    adj = torch.zeros(n, n, dtype=torch.float64)
    adj[edge_index[0], edge_index[1]] = 1.0
    walk = adj / adj.sum(1, keepdim=True).clamp(min=1)
    power, out = torch.eye(n, dtype=torch.float64), []
    for _ in range(steps):
        power = power @ walk
        out.append(power.diagonal())
    return torch.stack(out, 1)


@pytest.mark.parametrize("directed", [False, True])
def test_random_walk_pe_pyg_and_blocked_equal_matrix_powers(
        directed, monkeypatch):
    n, steps = 60, 7
    edge_index = random_graph(n, directed=directed, seed=2)
    expected = walk_reference(edge_index, n, steps).float()
    torch.testing.assert_close(random_walk_pe(edge_index, n, steps),
                               expected, atol=1e-5, rtol=1e-4)
    theirs = AddRandomWalkPE(steps, attr_name="pe")(
        Data(edge_index=edge_index, num_nodes=n)).pe
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=1e-4)
    # The blocked computation large dense-ish graphs take, on blocks
    # smaller than the graph.
    monkeypatch.setattr(positional_module, "BLOCKED_MIN_NODES", 0)
    monkeypatch.setattr(positional_module, "DENSE_FILL", 0.0)
    monkeypatch.setattr(positional_module, "BLOCK_COLUMNS", 16)
    assert positional_module._fills_in(edge_index, n)
    torch.testing.assert_close(random_walk_pe(edge_index, n, steps),
                               expected, atol=1e-5, rtol=1e-4)


def test_bad_encoding_arguments():
    edge_index = random_graph(5)
    with pytest.raises(ValueError, match="kind must be one of lap, rw"):
        graph_positional_encoding(edge_index, 5, "spectral", 4)
    with pytest.raises(ValueError, match="steps must be a positive"):
        random_walk_pe(edge_index, 5, 0)
    with pytest.raises(ValueError, match="outside 0..3"):
        laplacian_pe(edge_index, 4, 2)


# --------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------

@pytest.fixture
def fixture_root(tmp_path):
    mirror = tmp_path / "mirror"
    write_heterophilous(mirror / "heterophilous" / "minesweeper",
                        "minesweeper", num_nodes=40)
    root = tmp_path / "root"
    dataset = load_dataset("minesweeper", root=root, mirror=mirror)
    return root, dataset


def test_cache_computes_once_per_setting_and_raw_files(fixture_root,
                                                       monkeypatch):
    from tgnn_transformers.data import encodings
    root, dataset = fixture_root
    graphs = [dataset[0]]
    calls = []
    compute = encodings.graph_positional_encoding

    def counting(*args):
        calls.append(args[2:])
        return compute(*args)

    monkeypatch.setattr(encodings, "graph_positional_encoding", counting)
    first = positional_encodings("minesweeper", graphs, "rw", 4, root)
    path = encoding_cache_path("minesweeper", "rw", 4, root)
    assert path.is_file() and path.parent.name == "encodings"
    assert path.parent.parent == root / "heterophilous" / "minesweeper"
    again = positional_encodings("minesweeper", graphs, "rw", 4, root)
    assert calls == [("rw", 4)]
    torch.testing.assert_close(again, first)
    # Another setting: another file, computed.
    positional_encodings("minesweeper", graphs, "rw", 5, root)
    positional_encodings("minesweeper", graphs, "lap", 4, root)
    assert calls == [("rw", 4), ("rw", 5), ("lap", 4)]
    assert len(list(path.parent.glob("*.pt"))) == 3
    # Changed raw files: another key, computed again.
    raw = root / "heterophilous" / "minesweeper" / "raw" / "minesweeper.npz"
    raw.write_bytes(raw.read_bytes() + b"\0")
    assert encoding_cache_path("minesweeper", "rw", 4, root) != path
    positional_encodings("minesweeper", graphs, "rw", 4, root)
    assert calls[-1] == ("rw", 4) and len(calls) == 4


def test_cache_recomputes_when_its_file_does_not_fit(fixture_root):
    root, dataset = fixture_root
    path = encoding_cache_path("minesweeper", "rw", 3, root)
    path.parent.mkdir(parents=True)
    torch.save([torch.zeros(2, 3)], path)
    pe = positional_encodings("minesweeper", [dataset[0]], "rw", 3, root)
    assert pe[0].shape == (40, 3) and pe[0].abs().sum() > 0


# --------------------------------------------------------------------------
# The models' input stage
# --------------------------------------------------------------------------

def test_hstack_keeps_csr_features_sparse():
    x = torch.rand(6, 5)
    x[x < 0.6] = 0
    x[2] = 0  # an empty row
    pe = torch.randn(6, 3)
    dense = torch.cat([x, pe], 1)
    assert torch.equal(hstack_features(x, pe), dense)
    out = hstack_features(to_sparse_csr(x), pe)
    assert out.layout == torch.sparse_csr
    assert torch.equal(out.to_dense(), dense)
    with pytest.raises(ValueError, match="same N"):
        hstack_features(x, pe[:4])


def test_positional_input_concat_add_and_signs():
    x = torch.zeros(7, 4)
    pe = torch.randn(7, 3)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    stage = PositionalInput("lap", 3, "concat", 4)
    assert stage.out_channels == 7
    stage.eval()
    assert torch.equal(stage(x, pe, batch), torch.cat([x, pe], 1))
    stage.train()
    seen = set()
    for _ in range(20):
        signs = stage(x, pe, batch)[:, 4:] / pe
        assert set(signs.flatten().tolist()) <= {-1.0, 1.0}
        for g in range(3):  # one sign per graph and eigenvector
            assert (signs[batch == g] == signs[batch == g][0]).all()
        seen.add(tuple(signs[0].tolist()))
    assert len(seen) > 1
    walks = PositionalInput("rw", 3, "concat", 4).train()
    assert torch.equal(walks(x, pe, batch), torch.cat([x, pe], 1))
    added = PositionalInput("rw", 3, "add", 4)
    assert added.out_channels == 4
    torch.testing.assert_close(added(x + 1, pe), x + 1 + added.proj(pe))
    with pytest.raises(ValueError, match=r"pe of shape \[7, 3\], got None"):
        stage(x, None)
    with pytest.raises(ValueError, match="dense input features"):
        added(to_sparse_csr(x + 1), pe)


def test_models_take_pe_as_head_options():
    x, pe = torch.randn(6, 5), torch.randn(6, 4)
    edge_index = random_graph(6)
    net = build_model("node", "gat", 5, 3, hidden=8, heads=2, pe="rw",
                      pe_dim=4).eval()
    assert net.encoder.convs[0].in_channels == 9
    assert net(x, edge_index, pe=pe).shape == (6, 3)
    with pytest.raises(ValueError, match="built without a positional"):
        build_model("node", "gat", 5, 3, hidden=8)(x, edge_index, pe=pe)
    graph = build_model("graph", "gin", 5, 3, hidden=8, pe="lap", pe_dim=4,
                        pe_mode="add", readout="layers")
    assert graph.head[0].in_features == 5
    assert graph(x, edge_index, None, None, pe=pe).shape == (1, 3)


def test_node_recipe_computes_and_feeds_the_encoding(fixture_root):
    _, dataset = fixture_root
    config = resolve_config("node", "minesweeper", "mha",
                            {"hidden": 8, "heads": 2, "num_layers": 2,
                             "pe": "lap", "pe_dim": 3, "pe_mode": "add"})
    recipe = node_recipe(dataset[0], 2, config)
    assert recipe.model.positional.kind == "lap"
    assert recipe.train_epoch() > 0
    assert 0 <= recipe.evaluate()["val"] <= 1


def test_pe_on_the_graph_and_node_tasks_from_the_cli(tmp_path, data_mirror,
                                                     monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("TGNN_DATA_ROOT", str(root))
    monkeypatch.setenv("TGNN_DATA_MIRROR", str(data_mirror))
    out = tmp_path / "mutag"
    assert main(["train", "--task", "graph", "--dataset", "mutag",
                 "--model", "gps", "--pe", "rw", "--pe-dim", "6",
                 "--folds", "2", "--epochs", "1", "--hidden", "16",
                 "--heads", "2", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["pe"] == "rw" and metrics["config"]["pe_dim"] == 6
    cached = list((root / "tudataset" / "MUTAG" / "encodings").glob("*.pt"))
    assert len(cached) == 1
    encodings = torch.load(cached[0], weights_only=True)
    assert len(encodings) == 188 and encodings[0].shape[1] == 6
    out = tmp_path / "cora"
    assert main(["train", "--dataset", "cora", "--model", "gcn", "--pe",
                 "lap", "--pe-dim", "4", "--epochs", "1", "--hidden", "8",
                 "--out", str(out), "--quiet"]) == 0
    assert len(list((root / "planetoid" / "Cora" / "encodings").glob(
        "lap-4-*.pt"))) == 1
    assert np.isfinite(json.loads((out / "metrics.json").read_text())[
        "test"]["mean"])


def test_cached_encodings_are_not_raw_files(fixture_root, tmp_path):
    """Writing an encoding leaves the data set's processed files valid: the
    next load neither reprocesses nor rehashes the raw files."""
    from tgnn_transformers.data import sources
    root, dataset = fixture_root
    positional_encodings("minesweeper", [dataset[0]], "rw", 4, root)
    folder = root / "heterophilous" / "minesweeper"
    processed = sorted(p for p in (folder / "processed").rglob("*")
                       if p.is_file() and p.suffix == ".pt")
    stamps = [p.stat().st_mtime_ns for p in processed]
    assert processed and not any(
        "encodings" in p for p in sources.raw_fingerprint(folder))
    mirror = tmp_path / "mirror"
    load_dataset("minesweeper", root=root, mirror=mirror)
    assert [p.stat().st_mtime_ns for p in processed] == stamps
