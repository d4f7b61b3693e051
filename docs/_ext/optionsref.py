"""
A Sphinx directive, C{.. echotwist-options::}, that renders the options of
C{twistd echo} from the tap's own C{Options} class: the same names, help
texts and defaults that C{twistd echo --help} prints, so the reference
cannot drift from the program.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx


def optionRows() -> list[tuple[str, str]]:
    """
    Each option of C{twistd echo} as (how it is typed, its help text with
    its default), in the order C{--help} prints them.
    """
    from echotwist.tap import Options

    options = Options()
    short: dict[str, str] = {}
    for key, name in options.synonyms.items():
        if key != name and len(key) == 1:
            short[name] = key
    rows = []
    for spec in sorted(options.longOpt, key=lambda o: short.get(o.rstrip("="), o)):
        name = spec.rstrip("=")
        if name in ("help", "version"):
            continue
        typed = f"--{name}"
        if spec.endswith("="):
            typed += " " + name.upper().replace("-", "_")
        if name in short:
            typed = f"-{short[name]}, {typed}"
        doc = " ".join((options.docs.get(name) or "").split())
        default = options.defaults.get(name)
        if spec.endswith("=") and default is not None:
            doc = f"{doc} [default: {default}]"
        rows.append((typed, doc))
    return rows


class OptionsReference(Directive):
    has_content = False

    def run(self) -> list[Any]:
        definitions = nodes.definition_list()
        for typed, doc in optionRows():
            item = nodes.definition_list_item()
            item += nodes.term("", "", nodes.literal(typed, typed))
            body = nodes.definition()
            body += nodes.paragraph(doc, doc)
            item += body
            definitions += item
        return [definitions]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("echotwist-options", OptionsReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
