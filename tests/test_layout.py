"""
Where the tests are, kept true: a unit module per code module
(C{tests/test_<module>.py}, C{tests/test_probe_<module>.py} for
echotwist-probe's), the real-process tests under C{tests/system/} and none
directly under C{tests/}, no test written twice, and no class name used
twice anywhere in C{tests/} (a second C{SiteTests} would leave a reader,
and C{trial tests.X.SiteTests}, guessing).  Read with L{ast}: nothing is imported.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

from tests._tools import scratchDirectory
from tests.test_docstrings import modules

TESTS = os.path.dirname(os.path.abspath(__file__))

#: Code modules without a unit test module of their own, and why.
WITHOUT_OWN_MODULE = {
    "echotwist": "re-exports the public names, which every unit module imports",
    "echotwist._twisted.haproxy": "a part of the door: tests.test__twisted",
    "echotwist._twisted.openssl": "a part of the door: tests.test__twisted",
    "echotwist.reactor": "a subclass and install(), which installs a reactor:"
    " tests.system.test_reactor, in the real twistd",
    "echotwist.probe.__main__": "one call to main: tests.system.test_probe_command",
}

#: Unit modules that are not named after one code module, and why.
NOT_NAMED_AFTER_CODE = {
    "test_docstrings": "every public definition of the package",
    "test_layout": "this layout",
}

#: Unit modules that still hold a real-process class, and where it goes
#: (none now; an entry is a debt with a date).
STARTS_TWISTD: dict[str, str] = {}


def unitModuleFor(dotted: str) -> str:
    """
    The unit test module named after the code module C{dotted}:
    C{echotwist.stream} is tested in C{test_stream},
    C{echotwist.probe.target} in C{test_probe_target}.
    """
    parts = dotted.split(".")[1:]
    return "test_" + "_".join(parts)


def _modulesUnder(root: str) -> Iterator[str]:
    """
    The path of every Python module under C{root}, in a stable order.
    """
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            d
            for d in subdirectories
            if d != "__pycache__" and not d.startswith("_trial_temp")
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def classesIn(root: str) -> Iterator[tuple[str, str]]:
    """
    Every class defined at the top of a module under C{root}: its name, and
    the module's path relative to C{root}.
    """
    for path in _modulesUnder(root):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                yield node.name, os.path.relpath(path, root)


def reusedClassNames(root: str) -> dict[str, list[str]]:
    """
    The class names defined in more than one place under C{root}, each with
    the modules that define it.
    """
    where: dict[str, list[str]] = {}
    for name, path in classesIn(root):
        where.setdefault(name, []).append(path)
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def _testBodies(path: str) -> Iterator[tuple[str, str]]:
    """
    Each test method of the module at C{path}: its body without the
    docstring, as L{ast.dump} shows it, and its C{Class.method}.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for member in node.body:
            if isinstance(
                member, ast.FunctionDef | ast.AsyncFunctionDef
            ) and member.name.startswith("test"):
                body = member.body
                if ast.get_docstring(member) is not None:
                    body = body[1:]
                yield ast.dump(ast.Module(body, [])), f"{node.name}.{member.name}"


def duplicatedTests(root: str) -> list[list[str]]:
    """
    The test methods under C{root} whose bodies are the same code, in
    groups, each as C{path:Class.method}.
    """
    where: dict[str, list[str]] = {}
    for path in _modulesUnder(root):
        for body, test in _testBodies(path):
            where.setdefault(body, []).append(f"{os.path.relpath(path, root)}:{test}")
    return [tests for tests in where.values() if len(tests) > 1]


def importsFrom(path: str, module: str) -> set[str]:
    """
    The names the module at C{path} imports from C{module}.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


def headerNames(source: str) -> list[str]:
    """
    The modules (or classes) a module's C{test-case-name} header names.
    """
    match = re.search(r"^# -\*- test-case-name: (\S+) -\*-$", source, re.MULTILINE)
    return match.group(1).split(",") if match else []


def moduleExists(dotted: str) -> bool:
    """
    Whether C{dotted} (C{tests.test_x} or C{tests.test_x.SomeTests}) names
    a test module under C{tests/}.
    """
    parts = dotted.split(".")
    while len(parts) > 1:
        path = os.path.join(os.path.dirname(TESTS), *parts) + ".py"
        if os.path.exists(path):
            return True
        parts.pop()
    return False


def unitModules() -> list[str]:
    return sorted(
        name[: -len(".py")]
        for name in os.listdir(TESTS)
        if name.startswith("test_") and name.endswith(".py")
    )


class LayoutTests(SynchronousTestCase):
    def test_unitModulePerCodeModule(self) -> None:
        have = set(unitModules())
        missing = [
            f"{dotted}: no tests/{unitModuleFor(dotted)}.py"
            for dotted, _ in modules()
            if dotted not in WITHOUT_OWN_MODULE and unitModuleFor(dotted) not in have
        ]
        self.assertEqual(
            missing,
            [],
            "write the unit module, or say in tests/test_layout.py"
            " WITHOUT_OWN_MODULE where the code is tested",
        )

    def test_headersNameTheUnitModules(self) -> None:
        """
        Each code module's C{test-case-name} header names test modules that
        exist, its own unit module among them (C{trial --testmodule}
        runs what it names).
        """
        have = set(unitModules())
        wrong = []
        for dotted, source in modules():
            named = headerNames(source)
            wrong.extend(f"{dotted}: {n}" for n in named if not moduleExists(n))
            own = unitModuleFor(dotted)
            if own in have and f"tests.{own}" not in named:
                wrong.append(f"{dotted}: tests.{own} not named")
        self.assertEqual(wrong, [])

    def test_unitModulesNamedAfterCode(self) -> None:
        code = {unitModuleFor(dotted) for dotted, _ in modules()}
        stray = [
            name
            for name in unitModules()
            if name not in code
            and name not in NOT_NAMED_AFTER_CODE
            # The pytest-native tests: a runner of their own, not a module.
            and not name.startswith("test_pytest_")
        ]
        self.assertEqual(stray, [])

    def test_noRealProcessAmongUnitModules(self) -> None:
        """
        The unit modules start no twistd: C{tests._twistd}'s server is
        for tests.system.
        """
        starting = [
            name
            for name in unitModules()
            if importsFrom(os.path.join(TESTS, name + ".py"), "tests._twistd")
            & {"Server", "ServerTestCase"}
            and name not in STARTS_TWISTD
        ]
        self.assertEqual(starting, [])

    def test_noClassNameTwice(self) -> None:
        self.assertEqual(reusedClassNames(TESTS), {})

    def test_noTestWrittenTwice(self) -> None:
        self.assertEqual(duplicatedTests(TESTS), [])

    def test_theCheckSeesATestWrittenTwice(self) -> None:
        """
        The same test body in two classes is found, whatever their
        docstrings say; a different body is not.
        """
        root = scratchDirectory(self)
        with open(os.path.join(root, "test_a.py"), "w") as f:
            f.write(
                "class A:\n"
                "    def test_x(self):\n"
                "        'One.'\n"
                "        self.f(1)\n"
                "    def test_y(self):\n"
                "        self.f(2)\n"
                "class B:\n"
                "    def test_z(self):\n"
                "        self.f(1)\n"
            )
        self.assertEqual(
            duplicatedTests(root), [["test_a.py:A.test_x", "test_a.py:B.test_z"]]
        )

    def test_theCheckSeesAReusedName(self) -> None:
        """
        A class name used in two modules, one in a subpackage, is found;
        names used once are not.
        """
        root = scratchDirectory(self)
        os.mkdir(os.path.join(root, "system"))
        for path, source in [
            ("test_a.py", "class SiteTests:\n    pass\nclass Once:\n    pass\n"),
            (os.path.join("system", "test_b.py"), "class SiteTests:\n    pass\n"),
        ]:
            with open(os.path.join(root, path), "w") as f:
                f.write(source)
        self.assertEqual(
            reusedClassNames(root),
            {"SiteTests": ["test_a.py", os.path.join("system", "test_b.py")]},
        )
