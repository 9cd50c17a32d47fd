"""``--device`` and ``--precision`` of ``tgnn train``: a bf16 autocast run
on the CPU, and a clear error when CUDA is asked for and absent."""
import json

import pytest
import torch

from tgnn_transformers.cli import main
from tgnn_transformers.train.device import Precision, resolve_device


@pytest.mark.parametrize("model", ["mha", "gin-attention"])
def test_bf16_autocast_node_run_on_cpu(model, env):
    out = env / "out"
    assert main(["train", "--task", "node", "--dataset", "cora", "--model",
                 model, "--epochs", "2", "--hidden", "16", "--heads", "2",
                 "--device", "cpu", "--precision", "bf16", "--out", str(out),
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    assert metrics["config"]["precision"] == "bf16"
    assert metrics["device"]["device"] == "cpu"
    assert "device_name" in metrics["device"]
    losses = [row["train_loss"] for row in metrics["runs"][0]["history"]] \
        if "history" in metrics["runs"][0] else None
    assert metrics["test"]["mean"] is not None and \
        0.0 <= metrics["test"]["mean"] <= 1.0
    assert losses is None or all(loss == loss for loss in losses)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_requested_and_absent_is_a_clear_error(env, capsys):
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")
    code = main(["train", "--task", "node", "--dataset", "cora", "--model",
                 "mha", "--epochs", "1", "--device", "cuda", "--out",
                 str(env / "out"), "--quiet"])
    assert code != 0
    assert "CUDA is not available" in capsys.readouterr().err


def test_device_and_precision_values():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="expected auto"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="expected one of"):
        Precision("fp8")
    # the fp32 step is the plain backward + step
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    Precision("fp32").step((w * 2).sum(), opt)
    assert torch.allclose(w.detach(), torch.full((3, ), 0.8))
