import shutil

import pytest
import torch

from fixtures import write_ogbn_arxiv, write_planetoid
from tgnn_transformers.data import DataSourceError, data_root, load_dataset


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.mark.parametrize("name, nodes, edges, train", [
    ("cora", 2708, 10556, 140),
    ("citeseer", 3327, 9104, 120),
])
def test_planetoid_from_mirror(name, nodes, edges, train, root, data_mirror):
    ds = load_dataset(name, root=root, mirror=data_mirror)
    data = ds[0]
    assert (data.num_nodes, data.num_edges) == (nodes, edges)
    assert int(data.train_mask.sum()) == train
    assert int(data.val_mask.sum()) == 500
    # the mirror is never written to
    assert not (data_mirror / "planetoid" / ds.name / "processed").exists()


@pytest.mark.parametrize("name, graphs, classes", [("mutag", 188, 2),
                                                   ("proteins", 1113, 2)])
def test_tu_from_mirror(name, graphs, classes, root, data_mirror):
    ds = load_dataset(name, root=root, mirror=data_mirror)
    assert len(ds) == graphs and ds.num_classes == classes


def test_linkx_cornell5_from_mirror(root, data_mirror):
    data = load_dataset("cornell5", root=root, mirror=data_mirror)[0]
    assert data.num_nodes == 18660 and data.num_edges == 1581554


def test_pubmed_fixture_in_planetoid_format(tmp_path, root):
    mirror = tmp_path / "mirror"
    write_planetoid(mirror / "planetoid" / "PubMed", "pubmed")
    data = load_dataset("pubmed", root=root, mirror=mirror)[0]
    assert data.num_nodes == 600 and data.num_features == 5
    assert int(data.train_mask.sum()) == 20 and int(data.test_mask.sum()) == 50


def test_ogbn_arxiv_fixture_through_ogb(tmp_path, root, monkeypatch):
    pytest.importorskip("ogb")
    mirror = tmp_path / "mirror"
    write_ogbn_arxiv(mirror / "ogb" / "ogbn_arxiv")
    # ogb prompts on stdin for folders without a release marker: no stdin.
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("prompted"))
    dataset, split, evaluator = load_dataset("ogbn-arxiv", root=root,
                                             mirror=mirror)
    data = dataset[0]
    assert data.num_nodes == 40 and data.x.shape == (40, 8)
    assert split["train"].numel() == 24 and split["test"].numel() == 8
    y = data.y[split["test"]]
    acc = evaluator.eval({"y_true": y, "y_pred": y})["acc"]
    assert acc == 1.0
    # a second load reads the processed cache (torch.load weights_only)
    dataset2, _, _ = load_dataset("ogbn-arxiv", root=root, mirror=mirror)
    assert torch.equal(dataset2[0].y, data.y)


def test_missing_file_names_file_mirror_and_variable(tmp_path, root):
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir()
    with pytest.raises(DataSourceError) as info:
        load_dataset("cora", root=root, mirror=mirror)
    message = str(info.value)
    assert "ind.cora.x" in message and str(mirror) in message
    assert "TGNN_DATA_MIRROR" in message


def test_corrupt_raw_file_is_reported(tmp_path, root, data_mirror):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_mirror / "tudataset" / "MUTAG",
                    mirror / "tudataset" / "MUTAG")
    (mirror / "tudataset" / "MUTAG" / "raw" / "MUTAG_A.txt").write_text(
        "1, banana\n")
    with pytest.raises(DataSourceError, match="could not read the raw files"):
        load_dataset("mutag", root=root, mirror=mirror)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(tmp_path / "x") == tmp_path / "x"
