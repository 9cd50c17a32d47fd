"""The Triton kernels compile for a Hopper GPU (sm_90) without one.

Triton's interpreter (``test_triton_attention.py``) runs the kernels as
Python and accepts code the compiler refuses (a loop-carried variable that
changes type was caught here and not there), so every kernel variant is
also compiled ahead of time, through Triton's own passes and ``ptxas``
(shipped in the triton wheel), to a cubin.  Nothing is launched.
"""
import inspect
import itertools
import os

import pytest

# Fusion on, as every Triton release so far defaults to; set, so that
# Triton 3.9 does not warn that its default will change.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

triton = pytest.importorskip("triton")
pytest.importorskip("triton.backends.nvidia")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tgnn_transformers.functional import _triton_kernels as kernels  # noqa

HOPPER = GPUTarget("cuda", 90, 32)
INDEX_TYPES = {"SRC": "*i64", "DST": "*i64", "POS": "*i64", "START": "*i64",
               "END": "*i64", "ROW": "*i32", "SLOT": "*i32"}
INPUTS = ("Q", "K", "V", "EK", "EV", "DOUT")
SIZES = ("H", "C", "CV")

FLAGS = {
    "forward": ("HAS_EK", "HAS_EV", "HAS_B"),
    "weights": ("HAS_EK", "HAS_B"),
    "backward": ("HAS_EK", "HAS_EV", "HAS_B", "HAS_DALPHA", "NEED_DEK",
                 "NEED_DEV", "NEED_DB", "ATOMIC_KV"),
    "backward_by_source": ("HAS_EK", "HAS_EV", "HAS_B", "HAS_DALPHA",
                           "NEED_DEK", "NEED_DEV", "NEED_DB"),
}


def _compile(name, dtype, flag_value, block_e):
    fn = getattr(kernels, name)
    params = list(inspect.signature(fn.fn).parameters)
    constants = {flag: flag_value for flag in FLAGS[name]}
    constants.update(BLOCK_E=block_e, BLOCK_C=32, BLOCK_V=16)
    signature = {}
    for p in params:
        if p in constants:
            signature[p] = "constexpr"
        elif p in SIZES:
            signature[p] = "i32"
        elif p in INPUTS:
            signature[p] = "*" + dtype
        else:  # indices, and fp32 statistics, outputs and gradients
            signature[p] = INDEX_TYPES.get(p, "*fp32")
    constexprs = {(params.index(p), ): v for p, v in constants.items()
                  if p in params}
    return triton.compile(ASTSource(fn, signature, constexprs=constexprs),
                          target=HOPPER)


@pytest.mark.parametrize("name,dtype,flag_value,block_e", [
    (name, dtype, flag_value, block_e)
    for name, dtype, flag_value, block_e in itertools.product(
        FLAGS, ("fp32", "bf16", "fp16"), (True, False), (16, 64))
    # every flag combination in fp32; the low precisions at one block size
    if dtype == "fp32" or block_e == 16])
def test_kernel_compiles_for_sm90(name, dtype, flag_value, block_e):
    compiled = _compile(name, dtype, flag_value, block_e)
    assert compiled.asm["cubin"], "no machine code"
    assert ".target sm_90" in compiled.asm["ptx"]
