"""gagent's optional parts: the pip extra that brings each optional module, and the one
line that names it when the module is missing.

One table for the command line (``gagent.host.cli.main``: exit 14) and the library's lazy
exports (``gagent.host.open_domain_agent`` without ``gagent[host]``), both of which import
it; standard library only, and it imports nothing of gagent's, so neither side makes a
circle through it.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "extra_installed", "missing_extra", "needs_extra"]

#: gagent's optional parts: the top-level module each brings, and the extra that installs it.
EXTRAS: dict[str, str] = {
    "lxml": "host",
    "libvirt": "host",
    "libvirt_qemu": "host",
    "psycopg": "postgresql",
    "prometheus_client": "exporter",
    "serial": "guest",
}


def missing_extra(exc: BaseException | None) -> tuple[str, str] | None:
    """(module, extra) when ``exc``, or what caused it, is a missing optional part."""
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            module = exc.name.split(".")[0]
            if module in EXTRAS:
                return module, EXTRAS[module]
        exc = exc.__cause__ or exc.__context__
    return None


def needs_extra(what: str, module: str, extra: str) -> str:
    """The message: ``what`` needs ``module``, and the command that installs it."""
    return f"{what} needs {module}, which is not installed: pip install 'gagent[{extra}]'"


def extra_installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported (found, not imported: no cost)."""
    for module, its_extra in EXTRAS.items():
        if its_extra != extra:
            continue
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):  # hidden by an import hook; a module without spec
            return False
    return True
