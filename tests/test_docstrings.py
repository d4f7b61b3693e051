"""
Every public definition in echotwist has a docstring: module-level public
classes and functions, and the public methods of public classes (those
implementing a Twisted interface too: one line on what this implementation
does).  Read with L{ast}, so nothing is imported and nothing runs.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

import echotwist

PACKAGE = os.path.dirname(os.path.abspath(echotwist.__file__))

_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _public(name: str) -> bool:
    return not name.startswith("_")


def undocumented(source: str, module: str) -> Iterator[str]:
    """
    The public definitions in C{source} without a docstring, as
    C{module.name} or C{module.Class.name}.
    """
    tree = ast.parse(source)
    for node in tree.body:
        if not isinstance(node, _Definition) or not _public(node.name):
            continue
        if not ast.get_docstring(node):
            yield f"{module}.{node.name}"
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if (
                    isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                    and _public(member.name)
                    and not ast.get_docstring(member)
                ):
                    yield f"{module}.{node.name}.{member.name}"


def modules() -> Iterator[tuple[str, str]]:
    """
    Every module of the package: its dotted name and its source.
    """
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))
                dotted = relative[: -len(".py")].replace(os.sep, ".")
                with open(path, encoding="utf-8") as f:
                    yield dotted.removesuffix(".__init__"), f.read()


class DocstringTests(SynchronousTestCase):
    def test_everyPublicDefinitionHasOne(self) -> None:
        missing = [
            name
            for module, source in modules()
            for name in undocumented(source, module)
        ]
        self.assertEqual(missing, [], "public definitions without a docstring")

    def test_theCheckSeesWhatIsMissing(self) -> None:
        """
        The check finds an undocumented class, function, method and
        property, and passes over private and documented ones.
        """
        source = '''
class Public:
    """Documented."""
    def method(self): pass
    @property
    def prop(self): return 1
    def _private(self): pass
    def __init__(self): pass
    def documented(self):
        """Yes."""
class Bare: pass
class _Private:
    def method(self): pass
def function(): pass
async def coroutine(): pass
def _helper(): pass
'''
        self.assertEqual(
            list(undocumented(source, "m")),
            [
                "m.Public.method",
                "m.Public.prop",
                "m.Bare",
                "m.function",
                "m.coroutine",
            ],
        )

    def test_everyModuleIsRead(self) -> None:
        """
        The walk reaches the package's modules (a wrong path would make the
        first test pass on nothing).
        """
        names = {module for module, _ in modules()}
        for expected in ("echotwist", "echotwist.stream", "echotwist.tap"):
            self.assertIn(expected, names)
