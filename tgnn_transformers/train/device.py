"""Device and numeric precision of a training run (``--device``,
``--precision``).

``fp32`` trains in float32; ``bf16`` and ``fp16`` run the forward passes
under :func:`torch.autocast` (float32 weights, low-precision activations;
the attention kernels keep their softmax statistics in float32), and
``fp16`` scales the loss with a gradient scaler so small gradients do not
underflow.  Data move to the device once, when a recipe prepares them.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional

import torch

from ..functional._checks import check_choice

DEVICES_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: Optional[str] = "auto") -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device (under
    ``torchrun``, ``auto`` and ``cuda`` mean this process's GPU); a clear
    ``ValueError`` when CUDA is asked for and absent."""
    from .distributed import local_device
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return local_device(torch.device(
            "cuda" if torch.cuda.is_available() else "cpu"))
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec[5:]
        if index and not index.isdigit():
            raise ValueError(f"--device {spec!r}: expected {DEVICES_HELP}")
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {spec}: CUDA is not available here (torch "
                f"{torch.__version__}, built with CUDA "
                f"{torch.version.cuda or 'none'}); use --device cpu or auto, "
                "or install a CUDA build of torch on a machine with a GPU")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        return local_device(torch.device(spec))
    raise ValueError(f"--device {spec!r}: expected {DEVICES_HELP}")


def device_info(device: torch.device) -> Dict[str, Any]:
    """What ``metrics.json`` records about the device."""
    if device.type == "cuda":
        index = device.index if device.index is not None else \
            torch.cuda.current_device()
        return {"device": str(device),
                "device_name": torch.cuda.get_device_name(index),
                "cuda": torch.version.cuda}
    import platform
    return {"device": str(device),
            "device_name": platform.processor() or platform.machine(),
            "cpus": torch.get_num_threads()}


class Precision:
    """Autocast and (for fp16) gradient scaling of one run.

    ``with precision.autocast(): loss = ...`` then
    ``precision.step(loss, optimizer)`` in place of ``loss.backward();
    optimizer.step()``.
    """

    def __init__(self, precision: str = "fp32",
                 device: torch.device = torch.device("cpu")):
        check_choice("precision", precision, PRECISIONS)
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("--precision fp16 needs a CUDA device (CPU "
                             "autocast runs bf16); use --precision bf16 on "
                             "the CPU")
        self.name = precision
        self.device = device
        self.dtype = _DTYPES.get(precision)
        self.scaler = (torch.amp.GradScaler(device.type)
                       if precision == "fp16" else None)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             clip_grad: float = 0.0, parameters=None) -> None:
        """Backward (scaled for fp16), optional gradient-norm clipping of
        ``parameters`` (on the unscaled gradients) and the optimizer
        step."""
        if self.scaler is None:
            loss.backward()
            if clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(parameters, clip_grad)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip_grad > 0:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip_grad)
        self.scaler.step(optimizer)
        self.scaler.update()


def run_setup(config: Dict[str, Any]):
    """``(device, Precision)`` of a run's ``config`` (``device`` and
    ``precision``; defaults ``auto`` and ``fp32``)."""
    device = resolve_device(config.get("device", "auto"))
    return device, Precision(config.get("precision", "fp32"), device)
