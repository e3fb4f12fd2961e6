"""Shell completion of domain names, for click's own completion.

``eval "$(_GAGENT_COMPLETE=bash_source gagent)"`` (zsh_source, fish_source)
installs click's completion; DOMAIN arguments and options then complete with
the domains of the connection: the ``-c/--connect`` given before the word
(gagent's own or the command's), else ``$LIBVIRT_DEFAULT_URI``, else
libvirt's default.  Completion never fails: without libvirt, with libvirtd
down or hung, it offers nothing, within :data:`COMPLETION_SECONDS`.
"""

from __future__ import annotations

from typing import Any

import click

__all__ = ["COMPLETION_SECONDS", "complete_domains", "domain_argument"]

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
