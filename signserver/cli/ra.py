"""Hands `signserver [--config FILE] [-v] ra ...` to the RA's own command line before the core's
modules are imported: the RA is a separate program that shares only the command's name."""

from __future__ import annotations

_GLOBAL_WITH_VALUE = ("--config",)
_GLOBAL_FLAGS = ("-v", "--verbose")


def ra_arguments(argv: list[str]) -> list[str] | None:
    """The RA command line's arguments when ``argv`` names the ``ra`` command (the global options
    before it are passed on), else None."""
    passed: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in _GLOBAL_WITH_VALUE and index + 1 < len(argv):
            passed += argv[index:index + 2]
            index += 2
        elif word.startswith("--config="):
            passed.append(word)
            index += 1
        elif word in _GLOBAL_FLAGS:
            passed.append(word)
            index += 1
        else:
            return passed + argv[index + 1:] if word == "ra" else None
    return None


def run(arguments: list[str]) -> int:
    """Run `signserver ra ARGUMENTS`: the reference registry for `registry-dev` (a program of its
    own, which the RA never imports), else the RA's command line."""
    if "registry-dev" in arguments:
        at = arguments.index("registry-dev")
        if all(word.startswith("-") or arguments[i - 1] == "--config" for i, word in enumerate(arguments[:at])):
            from signserver.registry_dev.server import main as registry_main

            return registry_main(arguments[at + 1:])
    from signserver.ra.cli import main  # the RA's modules only

    return main(arguments)
