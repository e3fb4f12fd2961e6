"""Shell completion of domain names, for click's own completion.

``eval "$(_GAGENT_COMPLETE=bash_source gagent)"`` (zsh_source, fish_source)
installs click's completion; DOMAIN arguments and options then complete with
the domains of the connection: the ``-c/--connect`` given before the word
(gagent's own or the command's), else ``$LIBVIRT_DEFAULT_URI``, else
libvirt's default.  Completion never fails: without libvirt, with libvirtd
down or hung, it offers nothing, within :data:`COMPLETION_SECONDS`.

bash splits its words at ``COMP_WORDBREAKS``, ``:`` among them, so click's own
bash completion, which reads ``COMP_WORDS``, sees ``-c test : ///default`` for
``-c test:///default`` and completes the wrong word.  :class:`LineBashComplete`
(registered for ``bash`` when gagent's CLI loads) reads the line as typed up to
the cursor (``COMP_LINE``, ``COMP_POINT``) instead, split as click splits it;
zsh and fish pass whole words already and keep click's classes.
"""

from __future__ import annotations

import os
from typing import Any

import click
from click.shell_completion import (
    BashComplete,
    CompletionItem,
    add_completion_class,
    split_arg_string,
)

__all__ = ["COMPLETION_SECONDS", "LineBashComplete", "complete_domains", "domain_argument"]

#: How long completion waits for libvirt before offering nothing.
COMPLETION_SECONDS = 2.0


def _connection_uri(ctx: click.Context) -> str | None:
    """The -c/--connect given on the command line so far, innermost first."""
    node: click.Context | None = ctx
    while node is not None:
        uri = node.params.get("connect")
        if isinstance(uri, str) and uri:
            return uri
        node = node.parent
    return None  # libvirt reads $LIBVIRT_DEFAULT_URI itself


def _domain_names(uri: str | None, seconds: float) -> list[str]:
    """The connection's domain names, or [] when libvirt is missing, fails or takes
    longer than ``seconds`` (the listing then goes on in a daemon thread that the
    process's exit ends)."""
    try:
        from gagent.host.virt_calls import domain_names_blocking, within

        return within(seconds, lambda: domain_names_blocking(uri), "listing domains")
    except Exception:  # no libvirt, no libvirtd, refused, no answer: nothing to offer
        return []


def complete_domains(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """click ``shell_complete`` callback: the domain names that start with ``incomplete``."""
    names = _domain_names(_connection_uri(ctx), COMPLETION_SECONDS)
    return [name for name in names if name.startswith(incomplete)]


def domain_argument(**kwargs: Any) -> Any:
    """``@click.argument("domain")`` that completes domain names."""
    return click.argument("domain", shell_complete=complete_domains, **kwargs)


#: what click's bash script passes, and what ours passes besides
_CLICKS_ENV = "COMP_CWORD=$COMP_CWORD"
_LINE_ENV = f'{_CLICKS_ENV} COMP_LINE="$COMP_LINE" COMP_POINT=$COMP_POINT'
#: ends the typed line while it is split, so that the last word (maybe empty, maybe in an
#: open quote) is always one
_CURSOR = "x"


@add_completion_class
class LineBashComplete(BashComplete):
    """bash completion from the line as typed (``COMP_LINE`` up to ``COMP_POINT``): a
    ``:`` in a word (a URI) does not split it; ``COMP_WORDS`` when the line is not given
    (a script of click's own, sourced before this one)."""

    name = "bash"
    source_template = BashComplete.source_template.replace(_CLICKS_ENV, _LINE_ENV, 1)

    def get_completion_args(self) -> tuple[list[str], str]:
        line, point = os.environ.get("COMP_LINE"), os.environ.get("COMP_POINT", "")
        if line is None or not point.isdigit():
            return super().get_completion_args()
        words = split_arg_string(line[: int(point)] + _CURSOR)
        incomplete = words[-1][: -len(_CURSOR)]
        # bash replaces only its own current word (after the last ':' of ours): what
        # comes before it in ours is cut from each offer
        bash_word = self._bash_word()
        self._cut = incomplete[: len(incomplete) - len(bash_word)]
        if not incomplete.endswith(bash_word):
            self._cut = ""
        return words[1:-1], incomplete

    def _bash_word(self) -> str:
        words = split_arg_string(os.environ.get("COMP_WORDS", ""))
        cword = os.environ.get("COMP_CWORD", "")
        index = int(cword) if cword.isdigit() else len(words)
        return words[index] if index < len(words) else ""

    def format_completion(self, item: CompletionItem) -> str:
        cut = getattr(self, "_cut", "")
        if cut and item.type == "plain" and item.value.startswith(cut):
            item = CompletionItem(item.value[len(cut) :], type=item.type, help=item.help)
        return super().format_completion(item)
