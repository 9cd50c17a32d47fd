"""Sphinx configuration of the tgnn_transformers documentation.

Build it with ``bash scripts/docs.sh`` (warnings are errors).  The API
reference is generated from the docstrings (autosummary, one page per
object); the guides are MyST Markdown; the notebooks in ``notebooks/`` are
rendered with their stored outputs, never executed here (the test suite
executes them, ``scripts/run_notebooks.py`` stores them).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

# Importing the package must not reach a hub, and plots render off-screen.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import tgnn_transformers  # noqa: E402

project = "tgnn_transformers"
author = "the tgnn_transformers authors"
copyright = "2025, " + author
release = version = tgnn_transformers.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "myst_nb",  # MyST Markdown pages and the notebooks
]

# Sphinx reads the repository root (sphinx-build -c docs . OUT), so that the
# notebooks are rendered from notebooks/ where the tests execute them, and
# the links between pages are the relative links that also work on GitHub.
root_doc = "docs/index"
include_patterns = ["docs/**", "notebooks/*.ipynb"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb",
                 ".ipynb": "myst-nb"}
exclude_patterns = ["docs/_build", "docs/_templates", ".venv", ".git",
                    "runs", "data", "tests", "benchmarks",
                    "tgnn_transformers", "scripts"]
templates_path = ["_templates"]
# the site opens at docs/index.html; index.html at the top redirects there
html_additional_pages = {"index": "redirect.html"}

# Notebooks are shown as committed; executing them is the tests' job.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
add_module_names = False

html_theme = "furo"
html_title = f"tgnn_transformers {release}"
html_theme_options = {"navigation_with_keys": True}
copybutton_prompt_text = r"\$ "
copybutton_prompt_is_regexp = True
