"""Sphinx configuration of the mechzoo gallery (DESIGN.md §8).

Do not run sphinx-build on this folder directly: ``mechzoo gallery build [--fast]`` (or
``mechzoo.gallery.build``) first fits what is missing, generates one page per entry from its TOML
next to a copy of this file, and then runs Sphinx on that generated source tree.
"""

import json
import os
from pathlib import Path

import mechzoo

_here = Path(__file__).parent
_info = json.loads((_here / "_gallery_build.json").read_text()) if (_here / "_gallery_build.json").exists() else {}

project = "mechzoo"
author = "the mechzoo developers"
copyright = "the mechzoo developers, BSD-3-Clause"
version = release = mechzoo.__version__

extensions = ["sphinx.ext.mathjax", "sphinx_gallery.gen_gallery"]
exclude_patterns = ["_build", "examples", "**.ipynb_checkpoints"]
templates_path: list[str] = []
html_static_path = ["_static"]
html_css_files = ["mechzoo-gallery.css"]
html_js_files = ["mechzoo-gallery.js"]
html_title = "mechzoo gallery"
html_show_sourcelink = False
html_copy_source = False
suppress_warnings = ["config.cache"]

# Math renders offline when a local MathJax 2 was vendored into _static/mathjax (Debian package
# libjs-mathjax); otherwise Sphinx's default (MathJax 3 from a CDN) is used.
if _info.get("mathjax_local"):
    mathjax_path = "mathjax/MathJax.js?config=TeX-AMS_SVG-full"
    mathjax2_config = {
        "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                    "ignoreClass": "document", "processClass": "math|output_area"},
        "showMathMenu": False,
        "messageStyle": "none",
    }

try:
    import pydata_sphinx_theme  # noqa: F401

    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navbar_align": "left",
        "show_toc_level": 2,
        "secondary_sidebar_items": ["page-toc"],
        "footer_start": ["copyright"],
        "footer_end": ["sphinx-version"],
        "show_prev_next": False,
        "navigation_with_keys": False,
    }
    html_context = {"default_mode": "light"}  # an unset mode makes the theme log a console error
except ImportError:  # pragma: no cover - fallback theme
    html_theme = "alabaster"

_run_examples = os.environ.get("MECHZOO_GALLERY_EXAMPLES", "1") == "1"
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "plot_gallery": "True" if _run_examples else "False",
    "only_warn_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
}
