# -*- test-case-name: tests.test_environment -*-
"""
C{twistd echo}'s options from the environment: C{ECHOTWIST_} and an
option's name in upper case, dashes as underscores.
"""

from __future__ import annotations

import getopt
from collections.abc import Mapping

from twisted.python import usage

__all__ = [
    "ENVIRONMENT_PREFIX",
    "NOT_FROM_ENVIRONMENT",
    "REPEATED_OPTIONS",
    "environmentArguments",
    "environmentVariable",
]

#: What every C{twistd echo} option's variable starts with.
ENVIRONMENT_PREFIX = "ECHOTWIST_"

#: Options that repeat: from the environment, their values are separated
#: by whitespace (which no endpoint description or network holds).
REPEATED_OPTIONS = ("listen", "udp", "proxy-from")

#: Options that are no configuration.
NOT_FROM_ENVIRONMENT = ("help", "version")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def environmentVariable(option: str) -> str:
    """
    The environment variable that gives C{option}: C{ECHOTWIST_} and its
    name in upper case, dashes as underscores (C{ECHOTWIST_MAX_CONNECTIONS}).
    """
    return ENVIRONMENT_PREFIX + option.upper().replace("-", "_")


def environmentArguments(
    options: usage.Options,
    environ: Mapping[str, str],
    given: list[str],
    fromEnvironment: dict[str, str],
) -> list[str]:
    """
    The options C{environ} gives (see L{environmentVariable}), as
    command-line arguments of C{options}, for those options C{given} does
    not name: the command line wins, a repeated option's values included.
    A repeated option's variable holds its values separated by whitespace;
    a flag's holds 1, true, yes or on (0, false, no, off or nothing for
    unset).

    @param fromEnvironment: where to note the variable each option came
        from, by option name.
    @raise usage.UsageError: a flag's variable holds something else.
    """
    try:
        named, _ = getopt.getopt(given, options.shortOpt, options.longOpt)
    except getopt.GetoptError:
        return []  # the command line's own error is the one to see
    onCommandLine = {options.synonyms[name.lstrip("-")] for name, _ in named}
    arguments: list[str] = []
    for spec in options.longOpt:
        name = spec.rstrip("=")
        variable = environmentVariable(name)
        value = environ.get(variable)
        if name in NOT_FROM_ENVIRONMENT or name in onCommandLine or value is None:
            continue
        fromEnvironment[name] = variable
        if not spec.endswith("="):
            word = value.strip().lower()
            if word in _TRUE:
                arguments.append(f"--{name}")
            elif word not in _FALSE:
                raise usage.UsageError(
                    f"{variable}: {value!r} is not 1, true, yes or on (nor 0,"
                    " false, no or off)"
                )
        elif name in REPEATED_OPTIONS:
            for item in value.split():
                arguments += [f"--{name}", item]
        else:
            arguments += [f"--{name}", value]
    return arguments
