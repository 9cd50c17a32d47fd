import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(min(2, torch.get_num_threads()))

# Property tests (see tests/README.md): random in development, the same
# examples on every run in CI.  Each test sets its own max_examples.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True,
                          database=None, print_blob=True)
settings.load_profile(os.environ.get("TGNN_HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "dev"))


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


@pytest.fixture
def env(tmp_path, data_mirror, monkeypatch):
    """A temporary folder whose ``root/`` is the data root, data copied
    from the mirror (what a run of ``tgnn train`` reads)."""
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("TGNN_DATA_MIRROR", str(data_mirror))
    return tmp_path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
