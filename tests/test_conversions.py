"""Conversions either reproduce the model or refuse, naming what they do not
support: ``GraphTransformer.from_huggingface`` + ``encode_as_graphs`` on
small randomly initialised Hugging Face models of every supported type
(built from their config classes, nothing downloaded), the refused types
and settings, the activation mappings, and ``from_torch``'s activations."""
import functools
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from tgnn_transformers import GraphTransformer, GraphTransformerLayer  # noqa
from tgnn_transformers.adapters import (add_sparse_gin_adapters,  # noqa
                                        encode_as_graphs)
from tgnn_transformers.nn.graph_transformer import ACTIVATIONS  # noqa
from tgnn_transformers.nn.huggingface import (  # noqa
    HF_ACTIVATIONS, SUPPORTED_MODEL_TYPES, interleaved_to_rotate_half)
from tgnn_transformers.nn.positional import (RotaryEmbedding,  # noqa
                                             relative_position_bucket)

# Tiny models with weights large enough (initializer_range) that attention
# is far from uniform: a wrong rotation or a missing bias then moves the
# outputs by O(1), far above the 1e-4 tolerance.
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, vocab_size=100, initializer_range=0.4,
             attn_implementation="eager")
LENGTHS = (21, 4, 12)  # distances past MPNet's 8 exact buckets

CASES = {
    "bert-gelu_new": ("Bert", dict(hidden_act="gelu_new")),
    "roberta": ("Roberta", {}),
    "xlm-roberta": ("XLMRoberta", {}),
    "camembert": ("Camembert", {}),
    "electra-projected": ("Electra", dict(embedding_size=16)),
    "electra": ("Electra", dict(embedding_size=32)),
    "distilbert": ("DistilBert", dict(dim=32, n_layers=2, n_heads=4,
                                      hidden_dim=64)),
    "albert-shared": ("Albert", dict(embedding_size=16,
                                     num_hidden_layers=3)),
    "albert-groups": ("Albert", dict(embedding_size=16, num_hidden_layers=3,
                                     num_hidden_groups=2,
                                     inner_group_num=2)),
    "roformer-projected": ("RoFormer", dict(embedding_size=16)),
    "roformer": ("RoFormer", {}),
    "mpnet": ("MPNet", {}),
}


def build(kind, model_class="Model", **overrides):
    """A small ``transformers.<kind><model_class>`` in eval mode."""
    torch.manual_seed(0)
    options = dict(SMALL)
    if kind == "DistilBert":  # its own names for the sizes
        for name in ("hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size"):
            options.pop(name)
    options.update(overrides)
    config = getattr(transformers, kind + "Config")(**options)
    return getattr(transformers, kind + model_class)(config).eval()


def build_case(case, model_class="Model"):
    kind, settings = CASES[case]
    return build(kind, model_class, **settings)


def padded_batch(config, lengths=LENGTHS, left=False):
    """Random token ids for sentences of ``lengths``, padded with the
    model's pad id (right, or left), with a second segment where the model
    has token types."""
    longest = max(lengths)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, config.vocab_size, (len(lengths), longest),
                        generator=gen)
    columns = torch.arange(longest)[None]
    lengths = torch.tensor(lengths)[:, None]
    mask = (columns >= longest - lengths) if left else (columns < lengths)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids[~mask] = pad
    encoding = {"input_ids": ids, "attention_mask": mask.long()}
    if getattr(config, "type_vocab_size", 0) > 1:
        encoding["token_type_ids"] = (columns >= 3).long().expand_as(ids) \
            * mask
    return encoding


def run_both(model, encoding, **pattern):
    with torch.no_grad():
        reference = model(**encoding).last_hidden_state
        graphs = encode_as_graphs(model, encoding, **pattern)
        encoder = GraphTransformer.from_huggingface(model)
        out = encoder(graphs.x, graphs.edge_index, batch=graphs.batch,
                      pos=graphs.pos, attn_bias=graphs.attn_bias)
    return out, reference[graphs.token_mask], graphs, encoder


def test_every_supported_model_type_has_a_case():
    covered = {getattr(transformers, kind + "Config").model_type
               for kind, _ in CASES.values()}
    assert covered == set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("case", list(CASES))
def test_graph_encoder_reproduces_the_model(case):
    model = build_case(case)
    out, reference, graphs, _ = run_both(model, padded_batch(model.config))
    assert out.shape == (sum(LENGTHS), 32)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)
    family = model.config.model_type
    assert (graphs.pos is not None) == (family == "roformer")
    assert (graphs.attn_bias is not None) == (family == "mpnet")


@pytest.mark.parametrize("case", ["bert-gelu_new", "roformer", "mpnet"])
def test_left_padding(case):
    """Positions are the padded batch's columns, as in the models."""
    model = build_case(case)
    out, reference, _, _ = run_both(
        model, padded_batch(model.config, left=True))
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)


def test_albert_layers_stay_shared():
    model = build_case("albert-groups")
    encoder = GraphTransformer.from_huggingface(model)
    # 3 steps of 2 inner layers; steps 0 and 1 run group 0, step 2 group 1
    layers = encoder.layers
    assert len(layers) == 6
    assert layers[0] is layers[2] and layers[1] is layers[3]
    assert layers[0] is not layers[4] and layers[1] is not layers[5]
    shared = build_case("albert-shared")
    assert len({id(layer) for layer in
                GraphTransformer.from_huggingface(shared).layers}) == 1


def test_task_model_gives_its_base_encoder():
    model = build_case("distilbert", "ForSequenceClassification")
    encoding = padded_batch(model.config)
    with torch.no_grad():
        reference = model.distilbert(**encoding).last_hidden_state
        graphs = encode_as_graphs(model, encoding)
        out = GraphTransformer.from_huggingface(model)(
            graphs.x, graphs.edge_index, batch=graphs.batch)
    torch.testing.assert_close(out, reference[graphs.token_mask],
                               atol=1e-4, rtol=0)


def test_position_inputs_follow_the_attention_graph():
    model = build_case("mpnet")
    graphs = encode_as_graphs(model, padded_batch(model.config),
                              pattern="window", window=2)
    assert graphs.attn_bias.shape == (graphs.edge_index.size(1), 4)
    model = build_case("roformer")
    encoding = padded_batch(model.config)
    graphs = encode_as_graphs(model, encoding, pattern="window", window=2)
    assert graphs.pos.tolist() == [i for n in LENGTHS for i in range(n)]


# --------------------------------------------------------------------------
# the pieces the conversions rest on
# --------------------------------------------------------------------------
def interleaved_rope(x, pos, base=10000.0):
    r"""RoFormer's rotation written out: pair :math:`(2i, 2i+1)` rotated by
    :math:`p\,b^{-2i/C}`."""
    channels = x.size(-1)
    theta = base**(-torch.arange(0, channels, 2, dtype=torch.float64) /
                   channels)
    angle = pos.double()[:, None, None] * theta
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


def test_permuted_rotate_half_is_the_interleaved_rotation():
    heads, channels = 3, 8
    x = torch.randn(11, heads, channels)
    pos = torch.arange(11) * 7
    order = interleaved_to_rotate_half(1, channels)
    rotated = RotaryEmbedding(channels)(x[..., order], pos)
    torch.testing.assert_close(rotated, interleaved_rope(x, pos)[..., order])
    # across heads: each head's channels are reordered within the head
    flat = interleaved_to_rotate_half(heads, channels)
    torch.testing.assert_close(flat.view(heads, channels),
                               order + channels * torch.arange(heads)[:, None])
    # and the scores are those of the interleaved rotation
    q, k = torch.randn(2, 11, heads, channels)
    ours = (RotaryEmbedding(channels)(q[..., order], pos)[:, None] *
            RotaryEmbedding(channels)(k[..., order], pos)[None]).sum(-1)
    theirs = (interleaved_rope(q, pos)[:, None] *
              interleaved_rope(k, pos)[None]).sum(-1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_mpnet_buckets_are_t5_buckets():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder
    relative = torch.arange(-300, 301)
    torch.testing.assert_close(
        relative_position_bucket(relative, bidirectional=True,
                                 num_buckets=32, max_distance=128),
        MPNetEncoder.relative_position_bucket(relative, num_buckets=32,
                                              max_distance=128))


@pytest.mark.parametrize("hidden_act", sorted(HF_ACTIVATIONS))
def test_mapped_activations_equal_hugging_faces(hidden_act):
    from transformers.activations import ACT2FN
    ours, class_name = HF_ACTIVATIONS[hidden_act]
    theirs = ACT2FN[hidden_act]
    assert type(theirs).__name__ == class_name
    x = torch.linspace(-12, 12, 4001)
    torch.testing.assert_close(ACTIVATIONS[ours](x), theirs(x), atol=1e-6,
                               rtol=1e-6)


def test_tanh_and_exact_gelu_differ_enough_to_matter():
    x = torch.linspace(-6, 6, 4001)
    gap = (ACTIVATIONS["gelu_tanh"](x) - ACTIVATIONS["gelu"](x)).abs().max()
    assert gap > 1e-4
    torch.testing.assert_close(ACTIVATIONS["gelu_tanh"](x),
                               F.gelu(x, approximate="tanh"), atol=0, rtol=0)


# --------------------------------------------------------------------------
# refusals name what they do not support
# --------------------------------------------------------------------------
def _nystromformer():
    return build("Nystromformer", num_landmarks=4, segment_means_seq_len=8)


def _yoso():
    return build("Yoso")


def _reformer():
    torch.manual_seed(0)
    config = transformers.ReformerConfig(
        hidden_size=32, num_attention_heads=2, attention_head_size=16,
        feed_forward_size=64, vocab_size=100, axial_pos_shape=[4, 8],
        axial_pos_embds_dim=[16, 16], max_position_embeddings=32,
        attn_layers=["lsh", "local"], is_decoder=False)
    return transformers.ReformerModel(config).eval()


@pytest.mark.parametrize("make, model_type", [
    (_nystromformer, "nystromformer"), (_yoso, "yoso"),
    (_reformer, "reformer")])
def test_other_attention_kinds_are_refused(make, model_type):
    model = make()
    supported = "supported model types: " + ", ".join(SUPPORTED_MODEL_TYPES)
    with pytest.raises(ValueError, match=f"model_type='{model_type}'") as e:
        GraphTransformer.from_huggingface(model)
    assert supported in str(e.value)
    with pytest.raises(ValueError, match=f"model_type='{model_type}'"):
        encode_as_graphs(model, {"input_ids": torch.ones(1, 4).long()})


def test_rotary_attention_inside_a_bert_is_refused():
    """A BertModel whose self-attention was swapped for RoFormer's (the
    shapes and names are BERT's, the attention is not)."""
    from transformers.models.roformer.modeling_roformer import \
        RoFormerSelfAttention
    model = build("Bert")
    rotary = RoFormerSelfAttention(build("RoFormer").config)
    model.encoder.layer[1].attention.self = rotary
    with pytest.raises(ValueError,
                       match=r"encoder\.layer\.1\.attention\.self.*"
                       r"RoFormerSelfAttention"):
        GraphTransformer.from_huggingface(model)


def test_adapted_model_is_refused():
    model = add_sparse_gin_adapters(build("Bert"), top_k=2)
    with pytest.raises(ValueError, match="SparseGINLayer"):
        GraphTransformer.from_huggingface(model)


@pytest.mark.parametrize("kind, settings, named", [
    ("Bert", dict(position_embedding_type="relative_key"),
     "position_embedding_type='relative_key'"),
    ("Electra", dict(position_embedding_type="relative_key_query"),
     "position_embedding_type='relative_key_query'"),
    ("Bert", dict(is_decoder=True), r"is_decoder=True"),
    ("Roberta", dict(is_decoder=True, add_cross_attention=True),
     r"is_decoder=True .* and add_cross_attention=True"),
    ("RoFormer", dict(is_decoder=True), r"is_decoder=True"),
    ("RoFormer", dict(rotary_value=True), "rotary_value=True"),
    ("MPNet", dict(relative_attention_num_buckets=16),
     "relative_attention_num_buckets .* got 16"),
    ("Bert", dict(hidden_act="quick_gelu"), "hidden_act='quick_gelu'"),
    ("Albert", dict(hidden_act="gelu_10"), "hidden_act='gelu_10'"),
    ("DistilBert", dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                        activation="mish"), "activation='mish'"),
])
def test_settings_that_change_the_model_are_refused(kind, settings, named):
    model = build(kind, **settings)
    with pytest.raises(ValueError, match=named):
        GraphTransformer.from_huggingface(model)


def test_config_that_does_not_describe_the_layers_is_refused():
    model = build("Bert", hidden_act="gelu_new")
    model.config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="GELUActivation.*NewGELUActivation"):
        GraphTransformer.from_huggingface(model)


def test_a_changed_rotary_table_is_refused():
    model = build("RoFormer")
    with torch.no_grad():
        model.encoder.embed_positions.weight.mul_(2)
    with pytest.raises(ValueError, match="embed_positions"):
        GraphTransformer.from_huggingface(model)


def test_not_a_hugging_face_model():
    with pytest.raises(TypeError, match="Hugging Face"):
        GraphTransformer.from_huggingface(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------
# torch.nn.TransformerEncoderLayer activations
# --------------------------------------------------------------------------
TANH = functools.partial(F.gelu, approximate="tanh")


@pytest.mark.parametrize("activation, name", [
    (torch.nn.GELU(approximate="tanh"), "gelu_tanh"), (TANH, "gelu_tanh"),
    (torch.nn.GELU(), "gelu"), (F.gelu, "gelu"), (torch.nn.ReLU(), "relu"),
    (torch.nn.SiLU(), "silu"), (F.silu, "silu")],
    ids=["GELU-tanh", "partial-tanh", "GELU", "F.gelu", "ReLU", "SiLU",
         "F.silu"])
def test_from_torch_reproduces_the_activation(activation, name):
    layer = torch.nn.TransformerEncoderLayer(
        16, 2, 32, dropout=0.0, activation=activation, batch_first=True)
    with torch.no_grad():  # wide pre-activations: tanh and erf GELU differ
        layer.linear1.weight.mul_(20)
    graph_layer = GraphTransformerLayer.from_torch(layer)
    assert graph_layer.ffn.activation == name
    x = torch.randn(1, 6, 16)
    edge_index = torch.cartesian_prod(torch.arange(6), torch.arange(6)).t()
    # Grad enabled: torch's module path (its fused inference kernel knows
    # only the exact GELU).
    reference = layer(x.requires_grad_())[0]
    out = graph_layer(x[0], edge_index)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    if name == "gelu_tanh":
        exact = torch.nn.TransformerEncoderLayer(
            16, 2, 32, dropout=0.0, activation="gelu", batch_first=True)
        exact.load_state_dict(layer.state_dict())
        assert not torch.allclose(exact(x)[0], reference, atol=1e-5)


@pytest.mark.parametrize("activation", [
    torch.nn.LeakyReLU(), torch.nn.Mish(), torch.tanh,
    functools.partial(F.gelu, approximate="tanh", inplace=True)],
    ids=["LeakyReLU", "Mish", "tanh", "partial-extra-keyword"])
def test_from_torch_refuses_other_activations(activation):
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0,
                                             activation=activation)
    with pytest.raises(ValueError, match="from_torch supports the "
                       "activations relu .* gelu_tanh"):
        GraphTransformerLayer.from_torch(layer)
