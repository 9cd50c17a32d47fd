import pytest
import torch

from tgnn_transformers import MultiHeadAttentionConv


@pytest.fixture
def conv():
    return MultiHeadAttentionConv(4, 2, heads=2)


@pytest.fixture
def x():
    return torch.randn(5, 4)


def test_edge_index_wrong_shape(conv, x):
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, E\]"):
        conv(x, torch.zeros(3, 4, dtype=torch.long))


def test_edge_index_not_integer(conv, x):
    with pytest.raises(TypeError, match="edge_index must hold integers"):
        conv(x, torch.zeros(2, 4))


def test_edge_index_out_of_range(conv, x):
    with pytest.raises(ValueError, match="source index 7 but there are only 5"):
        conv(x, torch.tensor([[7], [0]]))
    with pytest.raises(ValueError, match="negative"):
        conv(x, torch.tensor([[-1], [0]]))


def test_feature_size_mismatch(conv):
    with pytest.raises(ValueError, match="in_channels=4"):
        conv(torch.randn(5, 3), torch.tensor([[0], [1]]))


def test_token_ids_instead_of_features(conv):
    with pytest.raises(TypeError, match="floating point"):
        conv(torch.ones(5, 4, dtype=torch.long), torch.tensor([[0], [1]]))


def test_edge_attr_missing_or_wrong_width(x):
    conv = MultiHeadAttentionConv(4, 2, heads=2, edge_dim=3)
    edge_index = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="edge_dim=3 but edge_attr is None"):
        conv(x, edge_index)
    with pytest.raises(ValueError, match=r"edge_attr must have shape \[2, 3\]"):
        conv(x, edge_index, torch.randn(2, 5))


def test_edge_attr_without_edge_dim(conv, x):
    with pytest.raises(ValueError, match="without edge_dim"):
        conv(x, torch.tensor([[0], [1]]), torch.randn(1, 2))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="backend"):
        MultiHeadAttentionConv(4, 2, backend="flash")
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadAttentionConv(4, 2, dropout=1.5)


def test_empty_graph_is_not_an_error(conv):
    out = conv(torch.randn(0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert out.shape == (0, 4)
    out = conv(torch.randn(3, 4), torch.zeros(2, 0, dtype=torch.long))
    assert torch.isfinite(out).all()


def test_check_choice_names_argument_choices_and_value():
    from tgnn_transformers.functional._checks import check_choice
    assert check_choice("norm", "rms", ("layer", "rms", None)) == "rms"
    assert check_choice("norm", None, ("layer", "rms", None)) is None
    assert check_choice("model", "mha", {"mha": 1, "gin": 2}) == "mha"
    with pytest.raises(ValueError, match=r"^unknown norm 'batch'; expected "
                       r"one of 'layer', 'rms', None$"):
        check_choice("norm", "batch", ("layer", "rms", None))
    with pytest.raises(ValueError, match=r"^unknown model \['mha'\]; "
                       r"expected one of 'mha', 'gin'$"):
        check_choice("model", ["mha"], {"mha": 1, "gin": 2})  # unhashable
    with pytest.raises(ValueError, match=r"expected one of 'mha' \(or a "
                       r"module\)$"):
        check_choice("attention", "gat", ["mha"], hint="or a module")
