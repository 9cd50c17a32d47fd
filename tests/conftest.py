import os
import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def _mirror() -> Path:
    env = os.environ.get("TGNN_DATA_MIRROR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_mirror() -> Path:
    """The read-only offline data mirror (``TGNN_DATA_MIRROR``)."""
    path = _mirror()
    if not path.is_dir():
        pytest.fail(f"data mirror not found at {path}; set TGNN_DATA_MIRROR "
                    "to the folder that holds planetoid/, tudataset/, ...")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
