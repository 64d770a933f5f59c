"""Sphinx configuration: myst-nb pages, the committed tutorial notebooks (not re-executed), autosummary API."""

import shutil
from importlib.metadata import version as _version
from pathlib import Path

project = "autogenome_sc"
author = "The autogenome_sc developers"
copyright = "2026, The autogenome_sc developers"
release = _version("autogenome_sc")

extensions = [
    "myst_nb",  # Markdown (MyST) pages and Jupyter notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpydoc docstrings
]

# The tutorial notebooks live in ../tutorials; Sphinx only reads pages under docs/, so they are
# copied to docs/tutorials/ (git-ignored) on every build.
_here = Path(__file__).parent
(_here / "tutorials").mkdir(exist_ok=True)
for _nb in sorted((_here.parent / "tutorials").glob("*.ipynb")):
    shutil.copy2(_nb, _here / "tutorials" / _nb.name)

# The tutorials are executed by the tests and committed with their outputs: render those.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # links such as index.md#where-results-go
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # autosummary writes .rst

autosummary_generate = True
autosummary_ignore_module_all = False  # a module's __all__ is its public API
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes" as a field list (also for ag.settings, an instance)
autodoc_class_signature = "separated"  # no constructor signature in the class heading

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

html_theme = "furo"
html_title = f"autogenome_sc {release}"
html_static_path = ["_static"]
