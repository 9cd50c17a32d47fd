"""Executes every notebook in notebooks/ in a Jupyter kernel and stores the
outputs in place (run after changing a notebook or the code it shows):

    TGNN_DATA_MIRROR=../shared/data .venv/bin/python scripts/run_notebooks.py
"""
from __future__ import annotations

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
    for path in paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        path = Path(path)
        notebook = execute(path)
        nbformat.write(notebook, path)
        print("executed", path)


if __name__ == "__main__":
    main(sys.argv[1:])
