"""The documentation covers the package as it is: every name of every
``__all__`` is in the API reference, the README's table of extras is
``pyproject.toml``'s, and the links between pages lead somewhere.

(The pages' ```python blocks run in ``tests/test_readme.py``; the site
itself is built, warnings as errors, by ``scripts/docs.sh``.)"""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import tgnn_transformers

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


# --------------------------------------------------------------------------
# API reference
# --------------------------------------------------------------------------

def _resolve(dotted):
    """The object a dotted name names (a module, or a module's attribute)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _documented():
    """(modules, objects) the API pages document: every ``automodule`` and
    every autosummary entry, resolved in its ``currentmodule``."""
    modules, objects = set(), {}
    for page in sorted((DOCS / "api").glob("*.rst")):
        current, in_summary = None, False
        for line in page.read_text().splitlines():
            directive = re.match(r"\.\. (automodule|currentmodule):: (\S+)",
                                 line)
            if directive:
                current, in_summary = directive.group(2), False
                if directive.group(1) == "automodule":
                    modules.add(current)
                continue
            if line.startswith(".. autosummary::"):
                in_summary = True
                continue
            if in_summary:
                entry = line.strip()
                if line and not line.startswith("   "):
                    in_summary = False
                elif entry and not entry.startswith(":"):
                    dotted = entry if entry.startswith("tgnn_transformers.") \
                        else f"{current}.{entry}"
                    objects[dotted] = _resolve(dotted)
    return modules, objects


def _public_modules():
    names = [tgnn_transformers.__name__]
    for info in pkgutil.walk_packages(tgnn_transformers.__path__,
                                      tgnn_transformers.__name__ + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return [importlib.import_module(name) for name in names]


def test_every_name_of_every_all_is_in_the_api_reference():
    modules, objects = _documented()
    documented_ids = {id(obj) for obj in objects.values()}
    missing = []
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if name == "__version__":
                continue  # named in docs/api/root.rst's text
            if inspect.ismodule(obj):
                ok = obj.__name__ in modules
            else:
                ok = id(obj) in documented_ids or \
                    f"{module.__name__}.{name}" in objects
            if not ok:
                missing.append(f"{module.__name__}.{name}")
    assert not missing, ("add these to an autosummary list in docs/api/: "
                         + ", ".join(missing))


def test_the_api_reference_lists_no_name_twice():
    _, objects = _documented()
    seen = {}
    for dotted, obj in objects.items():
        if not isinstance(obj, (str, int, float, tuple, dict)):
            assert id(obj) not in seen, f"{dotted} is {seen.get(id(obj))}"
            seen[id(obj)] = dotted


def test_version_is_named():
    assert "__version__" in (DOCS / "api" / "root.rst").read_text()


# --------------------------------------------------------------------------
# Extras
# --------------------------------------------------------------------------

def _pyproject_extras():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    return project["optional-dependencies"]


def _requirement_name(requirement):
    name = re.match(r"[A-Za-z0-9_.\-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _readme_extras():
    block = re.search(r"<!-- extras:start -->\n(.*?)<!-- extras:end -->",
                      README.read_text(), re.S)
    assert block, "README lacks the <!-- extras:start/end --> table"
    rows = {}
    for line in block.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = re.fullmatch(r"`([a-z]+)`", cells[0])
        if name:
            packages = {_requirement_name(p) for p in cells[2].split(",")
                        if p.strip()}
            rows[name.group(1)] = packages
    return rows


def test_every_extra_is_documented_and_nothing_else():
    extras, documented = _pyproject_extras(), _readme_extras()
    assert set(documented) == set(extras), (
        f"pyproject.toml has {sorted(extras)}, the README's install "
        f"section {sorted(documented)}")


def test_the_documented_packages_are_the_extras_packages():
    extras, documented = _pyproject_extras(), _readme_extras()
    for name, requirements in extras.items():
        if name == "all":
            inner = re.fullmatch(r"tgnn_transformers\[(.*)\]",
                                 requirements[0]).group(1)
            assert set(inner.split(",")) == set(extras) - {"all"}
            assert documented["all"] == set()
            continue
        assert documented[name] == {_requirement_name(r)
                                    for r in requirements}, name


def test_the_install_section_is_the_docs_install_page():
    page = (DOCS / "install.md").read_text()
    assert "start-after: <!-- install:start -->" in page


# --------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------

PAGES = [README] + sorted(
    p for p in DOCS.rglob("*.md")
    if not p.relative_to(DOCS).as_posix().startswith(
        ("_build/", "notebooks/", "api/generated/")))


@pytest.mark.parametrize("page", PAGES,
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_lead_to_files(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_every_guide_is_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    for guide in sorted((DOCS / "guides").glob("*.md")):
        assert f"guides/{guide.stem}\n" in index, guide.name
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.stem}\n" in index, notebook.name
