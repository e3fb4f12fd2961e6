"""Finding words on gagent's command line with click's own parser.

``gagent agent [DOMAIN] COMMAND``: DOMAIN is an optional word before the
command.  :class:`DomainFirstGroup` asks click's parser where the group's own
options end (so no list of options is kept by hand): the word there is DOMAIN
unless it names a command.  A domain named like a command (``info``) is reached
with ``--domain info`` or after ``--`` (``gagent agent -- info ping``: the word
after the options' ``--`` is always DOMAIN).

:func:`usage_context`: click's parser raises a few usage errors without a
context (an option missing its value); parsing the same words again, each
command on a context of its own, finds the command they are about.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from click.shell_completion import CompletionItem

__all__ = ["DomainFirstGroup", "usage_context"]

#: Where ``DomainFirstGroup`` puts DOMAIN: the group's parameter of this name (its --domain).
DOMAIN_PARAM = "domain"


def _scratch(
    command: click.Command, parent: click.Context | None, name: str | None
) -> click.Context:
    """A context to run ``command``'s parser on: nothing is converted or called back."""
    return command.context_class(command, info_name=name, parent=parent, **command.context_settings)


def _left_after_options(
    command: click.Command, ctx: click.Context, words: Sequence[str]
) -> list[str]:
    """What click's parser of ``command`` leaves of ``words`` (a group: its command's
    name and words).  Only the parser runs: no conversion, no callback, no help."""
    _, left, _ = command.make_parser(ctx).parse_args(list(words))
    return left


class DomainFirstGroup(click.Group):
    """A group taking an optional DOMAIN word before its command (see the module)."""

    def split_domain(
        self, ctx: click.Context, words: Sequence[str]
    ) -> tuple[str | None, list[str]]:
        """(DOMAIN or None, ``words`` without it)."""
        words = list(words)
        scratch = _scratch(self, ctx.parent, ctx.info_name)
        try:
            end = len(words) - len(_left_after_options(self, scratch, words))
        except click.UsageError:
            return None, words  # click's own parse says what is wrong
        if end == len(words):
            return None, words
        if words[end - 1 : end] == ["--"] and self._all_options(scratch, words[: end - 1]):
            # '--' ended the options (it was no option's value): the next word is DOMAIN,
            # and the group's options may follow it again
            del words[end - 1]
            return words.pop(end - 1), words
        if self.get_command(ctx, words[end]) is None:
            return words.pop(end), words
        return None, words

    def _all_options(self, scratch: click.Context, words: list[str]) -> bool:
        try:
            return not _left_after_options(self, scratch, words)
        except click.UsageError:  # '--channel --': the '--' was the option's value
            return False

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The commands and options, and before the command (no DOMAIN yet) what the
        --domain option completes (domain names)."""
        results = super().shell_complete(ctx, incomplete)
        if ctx.params.get(DOMAIN_PARAM) or incomplete.startswith("-"):
            return results
        for param in self.get_params(ctx):
            if param.name == DOMAIN_PARAM:
                results += param.shell_complete(ctx, incomplete)
        return results

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        positional, words = self.split_domain(ctx, args)
        rest = super().parse_args(ctx, words)
        if positional is not None:
            given = ctx.params.get(DOMAIN_PARAM)
            if given:
                raise click.UsageError(
                    f"give the domain once: {positional!r} or --domain {given!r}", ctx
                )
            ctx.params[DOMAIN_PARAM] = positional
        return rest


def usage_context(
    root: click.Command, words: Sequence[str], prog_name: str
) -> click.Context | None:
    """The context of the command whose own ``words`` click's parser refuses, or None.

    Follows ``words`` down the command tree as click does, running each
    command's parser alone (nothing is converted or called back), and returns
    the context of the first one that fails.
    """
    parent: click.Context | None = None
    command, name, args = root, prog_name, list(words)
    while True:
        ctx = _scratch(command, parent, name)
        if isinstance(command, DomainFirstGroup):
            args = command.split_domain(ctx, args)[1]
        try:
            left = _left_after_options(command, ctx, args)
        except click.UsageError:
            return ctx
        if not isinstance(command, click.Group) or not left:
            return None
        try:
            found, sub, after = command.resolve_command(ctx, left)
        except click.UsageError:  # an unknown command: that error has its context
            return None
        if sub is None:
            return None
        parent, command, name, args = ctx, sub, found, after
