"""The proof: on token graphs the conv *is* torch.nn.MultiheadAttention."""
import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import MultiHeadAttentionConv
from tgnn_transformers.transforms import SequenceToGraph

EMBED, HEADS = 64, 4
LENGTHS = [1, 7, 64, 23, 2, 40]


def ragged_batch(pattern):
    transform = SequenceToGraph(pattern)
    seqs = [torch.randn(n, EMBED) for n in LENGTHS]
    batch = Batch.from_data_list([transform(Data(x=s)) for s in seqs])
    return seqs, batch


def mha_per_sequence(mha, seqs, causal):
    outs = []
    for s in seqs:
        x = s.unsqueeze(0) if mha.batch_first else s.unsqueeze(1)
        mask = None
        if causal:
            mask = torch.nn.Transformer.generate_square_subsequent_mask(
                s.size(0))
        out, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
        outs.append(out.squeeze(0) if mha.batch_first else out.squeeze(1))
    return torch.cat(outs)


@pytest.mark.parametrize("pattern", ["full", "causal"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("backend", ["sparse", "dense", "auto"])
def test_conv_equals_multihead_attention(pattern, bias, batch_first, backend):
    mha = torch.nn.MultiheadAttention(EMBED, HEADS, bias=bias,
                                      batch_first=batch_first).eval()
    conv = MultiHeadAttentionConv.from_torch(mha, backend=backend).eval()
    seqs, batch = ragged_batch(pattern)

    x_ref = [s.clone().requires_grad_() for s in seqs]
    ref = mha_per_sequence(mha, x_ref, causal=pattern == "causal")
    x = batch.x.clone().requires_grad_()
    out = conv(x, batch.edge_index, batch=batch.batch)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)

    grad = torch.randn_like(ref)
    ref.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(x.grad, torch.cat([s.grad for s in x_ref]),
                               atol=1e-5, rtol=1e-5)
    # Parameter gradients agree too (q/k/v rows of in_proj).
    w_grad = torch.cat([conv.lin_query.weight.grad, conv.lin_key.weight.grad,
                        conv.lin_value.weight.grad])
    torch.testing.assert_close(w_grad, mha.in_proj_weight.grad, atol=1e-4,
                               rtol=1e-4)


def test_padded_batch_equals_mha_with_key_padding_mask():
    """Through the graph API a ragged batch equals one padded mha call."""
    mha = torch.nn.MultiheadAttention(EMBED, HEADS, batch_first=True).eval()
    conv = MultiHeadAttentionConv.from_torch(mha).eval()
    seqs, batch = ragged_batch("full")
    padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor(LENGTHS)
    pad_mask = torch.arange(padded.size(1))[None] >= lengths[:, None]
    ref, _ = mha(padded, padded, padded, key_padding_mask=pad_mask)
    out = conv(batch.x, batch.edge_index, batch=batch.batch)
    torch.testing.assert_close(out, ref[~pad_mask], atol=1e-5, rtol=1e-5)


def test_from_torch_rejects_unsupported_modules():
    with pytest.raises(ValueError, match="kdim"):
        MultiHeadAttentionConv.from_torch(
            torch.nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttentionConv.from_torch(
            torch.nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(TypeError):
        MultiHeadAttentionConv.from_torch(torch.nn.Linear(2, 2))
