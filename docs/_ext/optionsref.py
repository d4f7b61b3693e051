"""
A Sphinx directive, C{.. echotwist-options::}, that renders the options of
C{twistd echo} from the tap's own C{Options} class: the same names, help
texts and defaults that C{twistd echo --help} prints, so the reference
cannot drift from the program.

Each option becomes a Sphinx C{option} description, so other pages link to
it as C{:option:`--port`} and a link to an option that no longer exists
fails the build (it runs with warnings as errors).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx


class OptionRow(NamedTuple):
    """
    One option as C{--help} shows it.

    @ivar names: How it is typed, short form first (C{["-p", "--port"]}).
    @ivar metavar: What its value stands for (C{PORT}), or C{""} for a flag.
    @ivar doc: Its help text, with the default C{--help} appends.
    @ivar variable: The environment variable that gives it too
        (C{ECHOTWIST_PORT}), or C{""} for one that is no configuration
        (C{--help}).
    """

    names: list[str]
    metavar: str
    doc: str
    variable: str = ""


def _numeric(default: object) -> bool:
    """
    Whether an option's default is a number, given as one or, as the tap
    gives its defaults so that usage.Options coerces them like any value
    typed, as a string that reads as one.
    """
    if default is None or isinstance(default, bool):
        return False
    try:
        float(default)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def metavar(doc: str, default: object) -> str:
    """
    What an option's value stands for, read from its help text, so that no
    second list of options has to be kept beside the tap's.

    A numeric default (C{10} or C{"10"}) makes it a number: C{SECONDS}, C{BYTES} or C{BITS}
    when the help text counts in those, C{N} otherwise. Otherwise a
    placeholder the help text itself uses after a colon (C{tcp:PORT}) or
    with optional fields (C{IDLE[,INTERVAL,COUNT]}), then an endpoint
    description (C{ENDPOINT}), an address (C{ADDRESS}) or a name (C{NAME}).
    """
    words = doc.lower()
    if _numeric(default):
        for unit in ("seconds", "bytes", "bits"):
            if re.search(rf"\b{unit}\b", words):
                return unit.upper()
        return "N"
    placeholder = re.search(r":([A-Z]{3,})\b", doc)
    if placeholder:
        return placeholder.group(1)
    # A value of several fields, the later ones optional: IDLE[,INTERVAL,COUNT].
    fields = re.search(r"\b([A-Z]{3,}\[,[A-Z,]+\])", doc)
    if fields:
        return fields.group(1)
    if "endpoint description" in words:
        return "ENDPOINT"
    if "address" in words:
        return "ADDRESS"
    if re.search(r"\bname\b", words):
        return "NAME"
    return "VALUE"


def optionRows() -> list[OptionRow]:
    """
    Each option of C{twistd echo}, in the order C{--help} prints them, with
    the help text C{--help} prints for it.
    """
    from echotwist.environment import (
        NOT_FROM_ENVIRONMENT,
        REPEATED_OPTIONS,
        environmentVariable,
    )
    from echotwist.tap import Options

    options = Options()
    short: dict[str, str] = {}
    for key, name in options.synonyms.items():
        if key != name and len(key) == 1:
            short[name] = key
    rows = []
    for spec in sorted(options.longOpt, key=lambda s: s.rstrip("=")):
        name = spec.rstrip("=")
        doc = " ".join((options.docs.get(name) or "").split())
        default = options.defaults.get(name)
        if spec.endswith("=") and default is not None:
            # usage.Options appends the default to --help the same way.
            doc = f"{doc} [default: {default}]"
        names = [f"--{name}"]
        if name in short:
            names.insert(0, f"-{short[name]}")
        wanted = metavar(doc, default) if spec.endswith("=") else ""
        variable = ""
        if name not in NOT_FROM_ENVIRONMENT:
            variable = environmentVariable(name)
            if name in REPEATED_OPTIONS:
                variable += " (values separated by whitespace)"
            elif not spec.endswith("="):
                variable += " (1 or 0)"
        rows.append(OptionRow(names, wanted, doc, variable))
    return rows


def longDescription() -> str:
    """
    The paragraph C{twistd echo --help} ends with.
    """
    from echotwist.tap import Options

    return " ".join(Options.longdesc.split())


class OptionsReference(Directive):
    """
    C{.. echotwist-options::}: the description of C{twistd echo} and every
    option it takes.
    """

    has_content = False

    def run(self) -> list[Any]:
        result: list[Any] = [nodes.paragraph(text=longDescription())]
        for row in optionRows():
            signature = ", ".join(
                f"{name} {row.metavar}" if row.metavar else name for name in row.names
            )
            parsed = nodes.container()
            self.state.nested_parse(
                StringList(
                    [f".. option:: {signature}"], source="echotwist.tap.Options"
                ),
                self.content_offset,
                parsed,
            )
            for content in parsed.findall(addnodes.desc_content):
                # A plain paragraph, not parsed as reST: help texts hold
                # backslashes (tcp6:5000:interface=\:\:1) that must stay.
                content += nodes.paragraph(text=row.doc)
                if row.variable:
                    content += nodes.paragraph(text=f"Environment: {row.variable}")
            result.extend(parsed.children)
        return result


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("echotwist-options", OptionsReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
