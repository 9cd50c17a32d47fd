"""The task models' readouts against a computation written out here."""
import pytest
import torch
from torch_geometric.nn import global_add_pool

from tgnn_transformers.models import GraphClassifier


def small_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(9, 5, generator=gen)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 6],
                               [1, 2, 0, 4, 3, 6, 7, 8, 6, 8]])
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    return x, edge_index, batch


@pytest.mark.parametrize("model", ["gin-attention", "mha", "gin"])
def test_layers_readout_sums_one_head_per_layer(model):
    torch.manual_seed(0)
    heads = {} if model == "gin" else {"heads": 2, "out_heads": 2}
    net = GraphClassifier(model, 5, 3, hidden=8, num_layers=2,
                          readout="layers", **heads).eval()
    x, edge_index, batch = small_batch()
    layers = net.encoder(x, edge_index, batch=batch, return_layers=True)
    assert len(layers) == 3 and layers[0] is x
    layers[-1] = torch.nn.functional.elu(layers[-1])
    expected = sum(head(global_add_pool(h, batch))
                   for head, h in zip(net.head, layers))
    torch.testing.assert_close(net(x, edge_index, batch=batch), expected)


def test_graphs_in_a_batch_do_not_interact():
    torch.manual_seed(0)
    net = GraphClassifier("gin-attention", 5, 3, hidden=8, heads=2,
                          out_heads=2, num_layers=2, readout="layers").eval()
    x, edge_index, batch = small_batch()
    full = net(x, edge_index, batch=batch)
    alone = net(x[:3], edge_index[:, :3], batch=batch[:3])
    torch.testing.assert_close(full[:1], alone)


def test_bad_readout():
    with pytest.raises(ValueError, match="readout"):
        GraphClassifier("mha", 5, 3, hidden=8, heads=2, readout="max")
    with pytest.raises(ValueError, match="conv stack"):
        GraphClassifier("graph-transformer", 5, 3, hidden=8, heads=2,
                        readout="layers")
