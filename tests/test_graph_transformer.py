import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import (GINAttentionConv, GraphTransformer,
                               GraphTransformerLayer)
from tgnn_transformers.transforms import SequenceToGraph

D, HEADS, LENGTHS = 32, 4, [1, 9, 17, 4]


def ragged(pattern="full"):
    seqs = [torch.randn(n, D) for n in LENGTHS]
    t = SequenceToGraph(pattern)
    return seqs, Batch.from_data_list([t(Data(x=s)) for s in seqs])


def torch_padded(module, seqs):
    """Reference: the torch module on a padded batch with key padding."""
    padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor([s.size(0) for s in seqs])
    pad = torch.arange(padded.size(1))[None] >= lengths[:, None]
    return module(padded, src_key_padding_mask=pad)[~pad]


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("backend", ["sparse", "auto"])
def test_from_torch_encoder_layer(norm_first, activation, backend):
    layer = torch.nn.TransformerEncoderLayer(
        D, HEADS, 2 * D, dropout=0.0, activation=activation,
        norm_first=norm_first, batch_first=True)
    graph_layer = GraphTransformerLayer.from_torch(layer, backend=backend)
    seqs, batch = ragged()
    xs = [s.clone().requires_grad_() for s in seqs]
    ref = torch_padded(layer, xs)
    x = batch.x.clone().requires_grad_()
    out = graph_layer(x, batch.edge_index, batch=batch.batch)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    ref.backward(g)
    out.backward(g)
    torch.testing.assert_close(x.grad, torch.cat([s.grad for s in xs]),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(graph_layer.ffn.lin1.weight.grad,
                               layer.linear1.weight.grad, atol=1e-5,
                               rtol=1e-5)


def test_from_torch_encoder_stack():
    enc = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(D, HEADS, 64, dropout=0.0,
                                         batch_first=True, norm_first=True),
        num_layers=2, norm=torch.nn.LayerNorm(D),
        enable_nested_tensor=False).eval()
    graph_enc = GraphTransformer.from_torch(enc).eval()
    seqs, batch = ragged()
    ref = torch_padded(enc, seqs)
    out = graph_enc(batch.x, batch.edge_index, batch=batch.batch)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["mha", "gin-attention",
                                       "pna-attention"])
@pytest.mark.parametrize("norm", ["layer", "rms", "batch"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_runs_with_every_attention_and_norm(attention, norm,
                                                  norm_first):
    kwargs = {"pna-attention": dict(delta=1.2)}.get(attention, {})
    model = GraphTransformer(D, HEADS, num_layers=2, attention=attention,
                             attention_kwargs=kwargs, norm=norm,
                             norm_first=norm_first, dropout=0.1)
    x = torch.randn(20, D, requires_grad=True)
    edge_index = torch.randint(0, 20, (2, 60))
    out = model(x, edge_index)
    assert out.shape == (20, D) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_layer_with_edge_features_and_given_module():
    conv = GINAttentionConv(D, D // HEADS, heads=HEADS, edge_dim=3)
    layer = GraphTransformerLayer(D, HEADS, conv)
    assert layer.attention is conv
    edge_index = torch.randint(0, 10, (2, 30))
    out = layer(torch.randn(10, D), edge_index, torch.randn(30, 3))
    assert out.shape == (10, D)
    model = GraphTransformer(D, HEADS, 3, attention=conv)
    assert model.layers[0].attention is not model.layers[1].attention


def test_post_norm_formula_by_hand():
    layer = GraphTransformerLayer(D, HEADS, norm_first=False,
                                  activation="relu").eval()
    seqs, batch = ragged()
    x, ei = batch.x, batch.edge_index
    h = layer.norm1(x + layer.attention(x, ei))
    ref = layer.norm2(h + layer.ffn.lin2(torch.relu(layer.ffn.lin1(h))))
    torch.testing.assert_close(layer(x, ei), ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="must divide"):
        GraphTransformerLayer(30, 4)
    with pytest.raises(ValueError, match="unknown attention"):
        GraphTransformerLayer(32, 4, attention="linformer")
    with pytest.raises(ValueError, match="unknown norm"):
        GraphTransformerLayer(32, 4, norm="group")
    with pytest.raises(ValueError, match="activation"):
        GraphTransformerLayer(32, 4, activation="tanh")
