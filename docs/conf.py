"""
Sphinx configuration for echotwist's documentation.

The API reference is built by pydoctor (Twisted's own API documentation
tool, which reads the epytext docstrings this project writes) through its
Sphinx extension; the options reference is generated from the tap's
C{Options} class by C{_ext/optionsref.py}, so it cannot drift from
C{twistd echo --help}.
"""

import logging
import pathlib
import re
import sys

_here = pathlib.Path(__file__).resolve().parent
_root = _here.parent
sys.path.insert(0, str(_here / "_ext"))
sys.path.insert(0, str(_root))

project = "echotwist"
author = "the echotwist developers"
copyright = "the echotwist developers"
# The version is written once, in echotwist/__init__.py; read it without
# importing the package (the docs build needs no reactor).
release = re.search(
    r'^__version__ = "([^"]+)"',
    (_root / "echotwist" / "__init__.py").read_text(),
    re.MULTILINE,
).group(1)

extensions = [
    "sphinx.ext.intersphinx",
    "sphinx.ext.autosectionlabel",
    "pydoctor.sphinx_ext.build_apidocs",
    "optionsref",
]

master_doc = "index"
# Sections are linked as :ref:`page:Title`, so titles may repeat across pages.
autosectionlabel_prefix_document = True
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

pydoctor_args = [
    "--project-name=echotwist",
    "--docformat=epytext",
    f"--project-base-dir={_root}",
    "--html-output={outdir}/api",
    str(_root / "echotwist"),
]
pydoctor_url_path = "api/"
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
smartquotes = False
# A cross-reference that resolves to nothing (an API name that moved, say)
# is a warning, and so fails the -W build.
nitpicky = True


class _OfflineTwistedLinks(logging.Filter):
    """
    Drop pydoctor's warnings about links to Twisted's own API: they resolve
    only through Twisted's online intersphinx inventory, and the docs build
    (in CI too) has no network. Every other pydoctor warning, a docstring
    that does not parse or a link to an echotwist name that does not exist,
    stays a warning and so fails the C{-W} build.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not re.search(
            r'Cannot find link target for "twisted\.', record.getMessage()
        )


def setup(app: object) -> None:
    logging.getLogger("sphinx.pydoctor.sphinx_ext.build_apidocs").addFilter(
        _OfflineTwistedLinks()
    )
