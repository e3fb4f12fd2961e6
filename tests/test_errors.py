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


@pytest.mark.parametrize(
    ("target", "thaw"),
    [
        (errors.AgentTarget(domain="vm1"), "gagent thaw vm1"),
        (
            errors.AgentTarget(domain="vm 1", uri="qemu:///system"),
            "gagent thaw 'vm 1' -c qemu:///system",
        ),
        (
            errors.AgentTarget(socket="/run/a b.sock"),
            "gagent agent --socket '/run/a b.sock' fsfreeze thaw",
        ),
        (
            errors.AgentTarget(domain="vm1", thaw="gagent thaw vm1 -c test:///x"),
            "gagent thaw vm1 -c test:///x",
        ),
        (errors.AgentTarget(), "gagent thaw DOMAIN"),
    ],
    ids=["domain", "uri", "socket", "rendered-by-session", "unknown"],
)
def test_targets_name_the_thaw_command(target, thaw):
    assert target.thaw_command() == thaw


def test_a_socket_target_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert errors.AgentTarget.for_socket("g.sock").socket == str(tmp_path / "g.sock")


def test_guest_is_frozen_advice_follows_a_target_set_later():
    error = errors.GuestIsFrozen("guest-get-fsinfo")
    assert str(error).endswith("so guest-get-fsinfo was not sent: run 'gagent thaw DOMAIN'")
    error.target = errors.AgentTarget(domain="vm1", uri="qemu:///system")  # as the CLI layer may
    assert str(error) == (
        "guest vm1 is frozen (guest-fsfreeze-status: frozen), so guest-get-fsinfo was not sent: "
        "run 'gagent thaw vm1 -c qemu:///system'"
    )
    assert isinstance(error, errors.CommandUnavailable) and "\n" not in str(error)


def test_an_error_keeps_no_password_whatever_its_length():
    """guest-set-user-password's password (base64, often short) never stays in the evidence."""
    from gagent.errors import REDACTED, error_from_reply

    secret = "c2VjcmV0"  # base64 of a short password
    error = error_from_reply(
        "guest-set-user-password",
        {"class": "GenericError", "desc": "chpasswd failed"},
        arguments={"username": "root", "password": secret, "crypted": False},
    )
    assert error.arguments == {"username": "root", "password": REDACTED, "crypted": False}
    assert secret not in repr(error.arguments) and secret not in str(error)
