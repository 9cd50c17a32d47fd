"""Every ```python block of the README and of the documentation pages runs,
each in a fresh namespace and a temporary working directory.

A block that needs an optional extra says so in an HTML comment on the line
before it, ``<!-- needs: transformers, peft -->`` (``a|b``: either one); it
is skipped when a module it names cannot be imported."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: generated or copied at build time, not pages anyone writes
SKIP = ("_build/", "notebooks/", "api/generated/")
PAGES = [ROOT / "README.md"] + sorted(
    path for path in DOCS.rglob("*.md")
    if not path.relative_to(DOCS).as_posix().startswith(SKIP))


def _blocks(path):
    """(modules it needs, code) of every ```python block of ``path``."""
    found = re.findall(r"(?:^<!-- needs: ([^>]*) -->\n)?^```python\n(.*?)^```",
                       path.read_text(), re.S | re.M)
    return [([m.strip() for m in needs.split(",") if m.strip()], code)
            for needs, code in found]


BLOCKS = [(path, index, needs, code) for path in PAGES
          for index, (needs, code) in enumerate(_blocks(path))]


def _importable(alternatives):
    return any(importlib.util.find_spec(m) is not None
               for m in alternatives.split("|"))


@pytest.mark.parametrize(
    "path, index, needs, code", BLOCKS,
    ids=[f"{p.relative_to(ROOT).as_posix()}[{i}]" for p, i, _, _ in BLOCKS])
def test_snippet_runs(path, index, needs, code, tmp_path, monkeypatch):
    missing = [m for m in needs if not _importable(m)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (an optional extra)")
    monkeypatch.chdir(tmp_path)
    name = f"{path.relative_to(ROOT).as_posix()}[{index}]"
    exec(compile(code, name, "exec"), {"__name__": "__snippet__"})


def test_the_pages_have_snippets():
    readme = [b for b in BLOCKS if b[0].name == "README.md"]
    assert len(readme) >= 4
    assert len(BLOCKS) > len(readme) + 20
