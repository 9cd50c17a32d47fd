"""The constructor signature and documentation every attention conv shares.

The convs take ``TransformerConv``'s arguments (names, order, defaults,
positional as there) plus their own keyword-only options.  A subclass
writes only its options, as ``__init__(self, *args, <options>, **kwargs)``;
:func:`complete_conv_class` shows the shared arguments in place of
``*args`` (for ``inspect.signature``, IDEs and the API docs) and puts their
documentation where the class docstring says ``{shared_args}``.
"""
from __future__ import annotations

import inspect
from typing import Callable

#: The documentation of the shared constructor arguments; every conv's
#: docstring has it in place of the line ``{shared_args}``.
SHARED_ARGS_DOC = r"""in_channels: size of each input sample, a ``(source, target)`` tuple
            for bipartite graphs, or ``-1`` for lazy initialisation.
        out_channels: size of each head's output :math:`C`.
        heads: number of heads :math:`H`.
        concat: concatenate the heads (``True``) or average them.
        beta: gate the skip connection with
            :math:`\beta_i = \sigma(\mathbf{w}^{\top}[\mathbf{m}_i,
            \mathbf{x}_r, \mathbf{m}_i - \mathbf{x}_r])`, as in
            ``TransformerConv`` (only with ``root_weight=True``).
        dropout: dropout probability on the attention weights (PyG's name;
            the model registry and the transformer blocks call it
            ``attention_dropout``).
        edge_dim: size of edge features, added to keys and values after a
            linear projection :math:`\mathbf{W}_E`.
        bias: learn additive biases in the projections.
        root_weight: add the projected target features
            :math:`\mathbf{W}_{\mathrm{skip}} \mathbf{x}_i` (PyG's skip).
        out_proj: apply the output projection :math:`\mathbf{O}` to the
            combined heads.  The transformer's form is ``out_proj=True,
            root_weight=False``; ``TransformerConv``'s is the default.
        backend: ``"auto"`` or an attention backend (``"sparse"``,
            ``"dense"``, ``"flex"``, ``"triton"``; see
            :func:`~tgnn_transformers.functional.edge_attention`).
        rope: rotary position embedding of the queries and keys: ``True``
            for a :class:`~tgnn_transformers.nn.RotaryEmbedding` of the head
            width, or one to use; ``forward`` then needs ``pos``.
        **kwargs: further arguments of
            :class:`~torch_geometric.nn.conv.MessagePassing`."""


def expand_shared_doc(cls: type) -> None:
    """Puts :data:`SHARED_ARGS_DOC` into ``cls``'s docstring."""
    if cls.__doc__ and "{shared_args}" in cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("{shared_args}", SHARED_ARGS_DOC)


def complete_conv_class(cls: type, shared_init: Callable) -> None:
    """Completes a conv subclass: its docstring gets the shared arguments,
    and an ``__init__(self, *args, <keyword-only options>, **kwargs)`` gets
    the signature ``shared_init``'s arguments, then its options, then
    ``**kwargs``."""
    expand_shared_doc(cls)
    init = cls.__dict__.get("__init__")
    if init is None:
        return
    own = inspect.signature(init).parameters.values()
    if not any(p.kind is p.VAR_POSITIONAL for p in own):
        return
    shared = inspect.signature(shared_init)
    params = list(shared.parameters.values())
    options = [p for p in own if p.kind is p.KEYWORD_ONLY]
    init.__signature__ = shared.replace(parameters=params[:-1] + options +
                                        params[-1:])
