"""The settings as command-line options, generated from :class:`~posthog_customerio.config.Settings`.

One declaration per setting (its field: type, default, help, flag, group); a command names the groups
it takes with :func:`setting_options` and receives the flags given as one :class:`SettingFlags`.
"""

from __future__ import annotations

import functools
import inspect
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import ENV_NAMES, Settings, cli_of, default_text, flag_of, load_settings, value_type

__all__ = [
    "AsJson",
    "DeliveryTimeout",
    "PluginConfig",
    "Sandbox",
    "SettingFlags",
    "sandbox_data_dir",
    "setting_options",
]

#: the keyword argument a decorated command receives its :class:`SettingFlags` in
_PARAMETER = "flags"


@dataclass(frozen=True)
class SettingFlags:
    """The settings flags of one command line (only those given) and its ``--plugin-config``."""

    values: Mapping[str, Any]
    plugin_config: Path | None = None

    def settings(self) -> Settings:
        """:class:`Settings` from these flags, the plugin's JSON and the environment (:class:`ConfigError`)."""
        return load_settings(dict(self.values), self.plugin_config)


PluginConfig = Annotated[
    Path | None,
    typer.Option("--plugin-config", help="The original PostHog plugin's config JSON", show_default=False),
]
Sandbox = Annotated[
    bool, typer.Option("--sandbox", help="Use an in-process Customer.io sandbox instead of Customer.io")
]
#: ``--timeout`` of the jobs that deliver and wait (``send``, ``sync-persons``)
DeliveryTimeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Give up waiting for delivery after this many seconds (the rest stays queued)",
        show_default=False,
    ),
]
#: ``--json`` of the commands that print a summary
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON")]


def _option(name: str, flag: str | None = None) -> Any:
    """The typer option of the setting ``name`` (under ``flag`` instead of its own name when given)."""
    field = Settings.model_fields[name]
    flag = flag or flag_of(name)
    kind = value_type(name)
    default = default_text(name)
    shown = f"[env {ENV_NAMES[name]}; default {default}]" if default else f"[env {ENV_NAMES[name]}]"
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    option = typer.Option(*decls, help=f"{field.description} {shown}", show_default=False)
    return Annotated[kind | None, option]


def setting_options(
    *groups: str, plugin_config: bool = False, also: Mapping[str, str | None] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options of every setting in ``groups`` (and of the settings ``also`` names, under
    the flag given there or their own), and ``--plugin-config`` when asked.

    The command declares a keyword parameter ``flags``: it receives the :class:`SettingFlags`.
    """
    chosen: dict[str, str | None] = {name: None for name in Settings.model_fields if cli_of(name).group in groups}
    chosen.update(also or {})

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != _PARAMETER]
        clash = {p.name for p in own} & {*chosen, "plugin_config"}
        if clash or _PARAMETER not in signature.parameters:
            raise TypeError(f"{func.__name__}: needs a `flags` parameter and no parameter named {clash}")
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_option(name, flag))
            for name, flag in chosen.items()
        ]
        if plugin_config:
            keyword = inspect.Parameter.KEYWORD_ONLY
            added.append(inspect.Parameter("plugin_config", keyword, default=None, annotation=PluginConfig))

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in chosen}
            flags = SettingFlags(values, kwargs.pop("plugin_config", None))
            return func(**kwargs, **{_PARAMETER: flags})

        parameters = [*own, *added]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def sandbox_data_dir(sandbox: bool, settings: Settings) -> tuple[Settings, Path | None]:
    """With ``--sandbox`` and no data dir chosen: the settings with a throwaway one (the caller deletes it).

    The sandbox starts empty, so remembered state ("this person exists in Customer.io") from an
    earlier run must not be applied to it. A directory the user chose (``--data-dir`` or
    ``POSTHOG_CUSTOMERIO_DATA_DIR``) is never replaced, so it is never deleted: it holds the outbox
    and the people we remember. Returns the settings to run with and the throwaway directory or ``None``.
    """
    if not sandbox or "posthog_customerio_data_dir" in settings.model_fields_set:
        return settings, None
    throwaway = Path(tempfile.mkdtemp(prefix="posthog-customerio-sandbox-"))
    return settings.model_copy(update={"posthog_customerio_data_dir": throwaway}), throwaway
