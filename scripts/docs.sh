#!/usr/bin/env bash
# Builds the documentation site (Sphinx) into docs/_build/html (open its
# index.html), warnings as errors, and prints the page count.  Sets up .venv
# first (scripts/setup.sh) and adds the "docs" extra; the notebooks are
# rendered as committed, not executed.  Extra arguments go to sphinx-build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
STAMP=.venv/.tgnn-docs-stamp
wanted=$( { cat pyproject.toml scripts/docs.sh; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$wanted" ]; then
    .venv/bin/python -m pip install -q -e ".[docs]"
    echo "$wanted" > "$STAMP"
fi
# a fresh build every time: stale generated pages must not hide a warning
rm -rf docs/_build docs/api/generated
start=$(date +%s)
# the source root is the repository (docs/ and notebooks/), the
# configuration docs/conf.py
.venv/bin/python -m sphinx -W --keep-going -q -b html -c docs . docs/_build/html "$@"
pages=$(find docs/_build/html -name '*.html' \
             -not -path '*/_modules/*' -not -path '*/_static/*' \
             -not -name 'genindex.html' -not -name 'search.html' \
             -not -name 'py-modindex.html' \
             -not -path 'docs/_build/html/index.html' | wc -l)
echo "docs: $pages pages in docs/_build/html ($(( $(date +%s) - start )) s)"
