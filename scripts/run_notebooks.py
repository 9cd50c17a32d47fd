"""Executes every notebook in notebooks/ in a Jupyter kernel and stores the
outputs in place (run after changing a notebook or the code it shows):

    TGNN_DATA_MIRROR=../shared/data .venv/bin/python scripts/run_notebooks.py

or name the notebooks to run.  The stored outputs are the full versions
(one CPU thread: 01 and 02 about 20 s together, 03 about 80 s, 04 about
60 s); the tests run 03 and 04 reduced (``TGNN_NOTEBOOK_SMOKE=1``), which
this script clears.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """The notebook at ``path`` executed top to bottom in a fresh kernel
    (working directory: a scratch folder); raises on a failing cell."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as scratch:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": scratch}}).execute()
    return notebook


def main(paths) -> None:
    os.environ.pop("TGNN_NOTEBOOK_SMOKE", None)  # store the full versions
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # 04: the packaged MiniLM
    for path in paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        path = Path(path)
        notebook = execute(path)
        nbformat.write(notebook, path)
        print("executed", path)


if __name__ == "__main__":
    main(sys.argv[1:])
