"""The character corpus (``tgnn_transformers.data.corpus``) against the
definitions of nanoGPT's ``data/shakespeare_char/prepare.py`` and
``train.py``'s ``get_batch``, written out here: vocabulary, split, batches,
and the errors for bad files and bad input."""
import pytest
import torch

from tgnn_transformers.data.corpus import (CharCorpus, CharVocabulary,
                                           find_corpus, load_corpus,
                                           read_text_file)
from tgnn_transformers.data.sources import DataSourceError

SHAKESPEARE = "text/tinyshakespeare/input.txt"


@pytest.fixture(scope="module")
def shakespeare(data_mirror, tmp_path_factory):
    # an empty data root, so the file comes from the mirror
    root = tmp_path_factory.mktemp("empty_root")
    return load_corpus("shakespeare-char", root=root, mirror=data_mirror)


def test_shakespeare_as_nanogpt_prepares_it(shakespeare, data_mirror):
    text = (data_mirror / SHAKESPEARE).read_text(encoding="utf-8")
    assert len(shakespeare) == len(text) == 1_115_394
    # prepare.py: chars = sorted(list(set(data))), 65 of them
    assert shakespeare.vocab_size == 65
    assert "".join(shakespeare.vocab.chars) == (
        "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    # prepare.py's printout: train has 1,003,854 tokens, val 111,540
    assert shakespeare.train.numel() == 1_003_854 == int(len(text) * 0.9)
    assert shakespeare.val.numel() == 111_540
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    assert shakespeare.train[:50].tolist() == [stoi[c] for c in text[:50]]
    assert shakespeare.val[:50].tolist() == [
        stoi[c] for c in text[1_003_854:1_003_904]]
    assert shakespeare.data.dtype == torch.long


def test_round_trip(shakespeare):
    sample = "First Citizen:\nBefore we proceed any further, hear me speak."
    ids = shakespeare.encode(sample)
    assert ids.dtype == torch.long and ids.shape == (len(sample), )
    assert shakespeare.decode(ids) == sample
    assert shakespeare.decode(ids.tolist()) == sample
    assert shakespeare.decode(shakespeare.val[:300]) == \
        shakespeare.text[1_003_854:1_004_154]


def test_batches_are_nanogpt_blocks(shakespeare):
    B, T = 12, 64
    x, y = shakespeare.batch("train", B, T,
                             torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (B, T)
    assert x.dtype == y.dtype == torch.long
    # get_batch: ix = torch.randint(len(data) - block_size, (batch_size,))
    starts = torch.randint(1_003_854 - T, (B, ),
                           generator=torch.Generator().manual_seed(3))
    text = shakespeare.text
    for b, s in enumerate(starts.tolist()):
        assert shakespeare.decode(x[b]) == text[s:s + T]
        assert shakespeare.decode(y[b]) == text[s + 1:s + T + 1]
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_val_batches_come_from_the_last_tenth(shakespeare):
    gen = torch.Generator().manual_seed(0)
    x, y = shakespeare.batch("val", 4, 16, gen)
    val_text = shakespeare.text[1_003_854:]
    for row_x, row_y in zip(x, y):
        block = shakespeare.decode(row_x) + shakespeare.decode(row_y)[-1]
        assert block in val_text


def test_every_start_and_the_last_target_are_reachable():
    """Starts are drawn from [0, n - T): the last block ends on the last
    character, and no block runs past it."""
    corpus = CharCorpus("abcdefghij", train_fraction=0.9)  # train: 9 chars
    x, y = corpus.batch("train", 400, 3, torch.Generator().manual_seed(0))
    starts = set(x[:, 0].tolist())
    assert starts == set(corpus.encode("abcdef").tolist())
    assert int(y.max()) == int(corpus.encode("i")[0])


def test_generator_makes_batches_reproducible(shakespeare):
    a = shakespeare.batch("train", 3, 8, torch.Generator().manual_seed(5))
    b = shakespeare.batch("train", 3, 8, torch.Generator().manual_seed(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_any_text_file_and_the_root_before_the_mirror(tmp_path,
                                                      data_mirror):
    path = tmp_path / "poem.txt"
    path.write_text("héllo wörld\n" * 20, encoding="utf-8")
    corpus = load_corpus(path)
    assert corpus.vocab.chars == sorted(set("héllo wörld\n"))
    assert corpus.decode(corpus.encode("wörld")) == "wörld"
    # a copy below the data root wins over the mirror
    own = tmp_path / "root" / SHAKESPEARE
    own.parent.mkdir(parents=True)
    own.write_text("to be or not to be\n", encoding="utf-8")
    assert find_corpus("shakespeare-char", tmp_path / "root",
                       data_mirror) == own
    assert len(load_corpus("shakespeare-char", tmp_path / "root",
                           data_mirror)) == 19


def test_missing_corpus_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("TGNN_DATA_MIRROR", raising=False)
    with pytest.raises(DataSourceError, match="TGNN_DATA_MIRROR") as err:
        load_corpus("shakespeare-char", root=tmp_path)
    assert str(tmp_path / SHAKESPEARE) in str(err.value)
    with pytest.raises(DataSourceError, match="lacks"):
        load_corpus("shakespeare-char", root=tmp_path, mirror=tmp_path)
    missing = tmp_path / "nothing.txt"
    with pytest.raises(DataSourceError, match="neither a named corpus") as e:
        load_corpus(missing)
    assert str(missing) in str(e.value)
    with pytest.raises(ValueError, match="unknown corpus 'tiny'"):
        find_corpus("tiny")


def test_bad_files_are_named(tmp_path):
    with pytest.raises(DataSourceError, match="not found") as err:
        read_text_file(tmp_path / "absent.txt")
    assert "absent.txt" in str(err.value)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataSourceError, match="empty") as err:
        CharCorpus.from_file(empty)
    assert str(empty) in str(err.value)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataSourceError, match="not UTF-8") as err:
        load_corpus(latin)
    assert str(latin) in str(err.value) and "offset 3" in str(err.value)
    with pytest.raises(DataSourceError, match="not found"):
        read_text_file(tmp_path)  # a folder


def test_encode_and_decode_errors_name_the_culprit(shakespeare):
    with pytest.raises(ValueError, match=r"character '€' at position 4 "):
        shakespeare.encode("cost€5")
    with pytest.raises(ValueError, match="id 65 at position 1 .*0, 65"):
        shakespeare.decode([1, 65])
    with pytest.raises(ValueError, match="id -1 at position 0"):
        shakespeare.decode(torch.tensor([-1]))
    with pytest.raises(ValueError, match="1-D integer tensor"):
        shakespeare.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="text must be a str"):
        shakespeare.encode([1, 2])


def test_batch_and_construction_errors(shakespeare):
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        shakespeare.batch("test", 2, 8, gen)
    with pytest.raises(ValueError, match="batch_size must be an integer "
                       ">= 1, got 0"):
        shakespeare.batch("train", 0, 8, gen)
    with pytest.raises(ValueError, match="block_size must be an integer "
                       ">= 1, got 2.5"):
        shakespeare.batch("train", 2, 2.5, gen)
    short = CharCorpus("abcdefghijklmnopqrst")  # val: 2 characters
    with pytest.raises(ValueError, match="val split .* has 2 characters; "
                       "a block of block_size=4 .* at least 5"):
        short.batch("val", 1, 4, gen)
    with pytest.raises(ValueError, match="train_fraction must be a number "
                       "in \\(0, 1\\), got 1.0"):
        CharCorpus("abc", train_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        CharCorpus("")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CharCorpus("abcz", vocab=CharVocabulary("abc"))


def test_vocabulary_checks_its_characters():
    vocab = CharVocabulary(["b", "a"])
    assert vocab.encode("ab").tolist() == [1, 0] and len(vocab) == 2
    assert "a" in vocab and "c" not in vocab
    with pytest.raises(ValueError, match="duplicates \\['a'\\]"):
        CharVocabulary("aab")
    with pytest.raises(ValueError, match="single characters, got 'ab'"):
        CharVocabulary(["ab"])
    with pytest.raises(ValueError, match="at least one character"):
        CharVocabulary("")
