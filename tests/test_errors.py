"""gagent.errors: the one error tree, drawn in the module's docstring, is complete and true."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import gagent
import gagent.guest
from gagent import errors


def _drawn_tree() -> dict[str, str]:
    """Class name -> parent name, read from the docstring's drawing (indentation = depth)."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        root = re.fullmatch(r"\s*(GagentError)\s*", line)
        if root:
            stack = [(-1, "GagentError")]
            continue
        node = re.match(r"^(\s*[| ]*)\+-- (\w+)", line)
        if not node or not stack:
            continue
        depth = len(node.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[node.group(2)] = stack[-1][1]
        stack.append((depth, node.group(2)))
    return parents


def _import_everything() -> None:
    """Every gagent module, so that every subclass of GagentError exists."""
    pytest.importorskip("libvirt")  # the host package needs the host extra
    pytest.importorskip("lxml")
    # gagent.host and gagent.guest install from their own folders (package-dir),
    # which a walk of gagent's own folder would not find
    for package in (gagent, importlib.import_module("gagent.host"), gagent.guest):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith(".__main__"):  # those run a command line
                importlib.import_module(info.name)


def _real_tree() -> dict[str, str]:
    found: dict[str, str] = {}
    todo = [errors.GagentError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("gagent.") and not sub.__name__.startswith("_"):
                found[sub.__name__] = cls.__name__
                todo.append(sub)
    return found


def test_the_drawing_matches_the_classes():
    _import_everything()
    assert _drawn_tree() == _real_tree()


def test_the_drawing_is_read_as_a_tree():
    drawn = _drawn_tree()
    assert drawn["GuestFrozen"] == "CommandDisabled"
    assert drawn["CommandDisabled"] == "AgentError"
    assert drawn["ThawUnconfirmed"] == "FreezeError"
    assert drawn["UsageError"] == "GagentError"
