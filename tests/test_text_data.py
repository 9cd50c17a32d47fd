"""Text readers (SST-2, TREC in Latin-1, R8), the vocabulary and the
sentence-graph dataset, on the offline mirror."""
import pytest

from tgnn_transformers.data import (DataSourceError, SentenceGraphDataset,
                                    Vocabulary, load_text_splits,
                                    read_text_split)

SIZES = {"sst2": {"train": 6920, "val": 872, "test": 1821},
         "trec": {"train": 5452, "test": 500},
         "r8": {"train": 5485, "test": 2189}}


@pytest.mark.parametrize("name", list(SIZES))
def test_raw_splits_have_upstream_sizes(name, data_mirror, tmp_path):
    for split, size in SIZES[name].items():
        sentences, labels = read_text_split(name, split, root=tmp_path,
                                            mirror=data_mirror)
        assert len(sentences) == len(labels) == size
        assert all(s and all(w == w.lower() for w in s)
                   for s in sentences[:50])


def test_splits_holdout_and_classes(data_mirror, tmp_path):
    trec = load_text_splits("trec", tmp_path, data_mirror, seed=0)
    assert trec.num_classes == 6
    assert len(trec.splits["val"][0]) == 545
    assert len(trec.splits["train"][0]) == 5452 - 545
    again = load_text_splits("trec", tmp_path, data_mirror, seed=0)
    assert again.splits["val"] == trec.splits["val"]
    other = load_text_splits("trec", tmp_path, data_mirror, seed=1)
    assert other.splits["val"] != trec.splits["val"]
    r8 = load_text_splits("r8", tmp_path, data_mirror, limit=300)
    assert r8.classes == sorted(r8.classes) and "earn" in r8.classes
    sst = load_text_splits("sst2", tmp_path, data_mirror)
    assert sst.num_classes == 2 and len(sst.splits["val"][0]) == 872


def test_missing_file_names_file_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TGNN_DATA_MIRROR", raising=False)
    with pytest.raises(DataSourceError, match="TREC.train.all.*"
                       "TGNN_DATA_MIRROR"):
        read_text_split("trec", "train", root=tmp_path)
    with pytest.raises(ValueError, match="unknown text data set"):
        load_text_splits("imdb", tmp_path)


def test_vocabulary():
    vocab = Vocabulary.build([["a", "b", "a"], ["c", "a", "b"]], min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "<cls>", "<span>", "a", "b"]
    assert vocab.encode(["a", "zzz", "b"]).tolist() == [4, 1, 5]
    assert vocab.decode([2, 4]) == ["<cls>", "a"] and len(vocab) == 6


@pytest.mark.parametrize("pattern", ["full", "window", "binary_partition",
                                     "global_window"])
def test_sentence_graphs(pattern):
    vocab = Vocabulary.build([["the", "cat", "sat"]])
    ds = SentenceGraphDataset([["the", "cat", "sat"], ["cat"]], [1, 0],
                              vocab, pattern, max_length=3)
    g = ds[0]
    assert vocab.decode(g.x[:3]) == ["<cls>", "the", "cat"]  # cut to 3
    assert int(g.length) == 3 and g.y.tolist() == [1]
    assert g.position[:3].tolist() == [0, 1, 2]
    assert g.virtual.sum() == (2 if pattern == "binary_partition" else 0)
    assert len(ds) == 2 and ds[1].x[0] == vocab.cls_id
