"""MkDocs hook: the configuration reference, generated from ``Settings`` when the site is built.

``configuration.md`` holds the marker ``<!-- settings-reference -->``; this hook replaces it with one
table row per field of :class:`posthog_customerio.config.Settings` (environment variable, CLI flags,
type, default, secret, description). Nothing generated is committed: the table is always the code's.

Rows come from ``posthog_customerio.config.settings_reference()`` when the package has it, else from
``Settings.model_fields`` directly (variable = the field name upper-cased, description =
``field.description``, secret = a ``SecretStr`` field). CLI flags are read from the typer app: an
option whose help names ``[env VARIABLE`` sets that variable.

The hook also publishes ``bench/RESULTS.md`` as the page ``benchmark-results.md``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- settings-reference -->"
RESULTS = ROOT / "bench" / "RESULTS.md"
RESULTS_PAGE = "benchmark-results.md"

if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # document this checkout's code, whatever is installed


# -- the rows --------------------------------------------------------------------------------------
def cli_flags() -> dict[str, dict[str, list[str]]]:
    """Environment variable → {flag → the commands that take it}, from the typer app's option help.

    A boolean's two forms are one flag, ``--merge-people/--no-merge-people``.
    """
    return {variable: {flag: commands for flag, (commands, _) in flags.items()} for variable, flags in _cli().items()}


def cli_help() -> dict[str, str]:
    """Environment variable → the first ``--help`` text that names it, without its ``[env …]`` part."""
    found: dict[str, str] = {}
    for variable, flags in _cli().items():
        for _, help_text in flags.values():
            text = re.sub(r"\s*\[env [^\]]*\]", "", help_text).strip()
            if text:
                found.setdefault(variable, text)
    return found


def _cli() -> dict[str, dict[str, tuple[list[str], str]]]:
    import typer.main

    from posthog_customerio.cli import app

    group = typer.main.get_command(app)
    found: dict[str, dict[str, tuple[list[str], str]]] = {}
    for command_name, command in sorted(group.commands.items()):  # type: ignore[attr-defined]
        for param in command.params:
            help_text = getattr(param, "help", None) or ""
            opts = [opt for opt in param.opts if opt.startswith("--")]
            negative = [opt for opt in getattr(param, "secondary_opts", []) if opt.startswith("--")]
            if not opts:
                continue
            flag = "/".join([opts[0], *negative[:1]]) if negative else ", ".join(opts)
            for variable in re.findall(r"\[env ([A-Z][A-Z0-9_]*)", help_text):
                commands, _ = found.setdefault(variable, {}).setdefault(flag, ([], help_text))
                commands.append(command_name)
    return found


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " or ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_type_name(arg) for arg in args)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    if annotation in names:
        return names[annotation]
    name = getattr(annotation, "__name__", None) or str(annotation)
    return "secret string" if name == "SecretStr" else name


def _bounds(metadata: Iterable[Any]) -> str:
    parts = []
    for item in metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {_number(value)}")
    return ", ".join(parts)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default(value: Any) -> str:
    from pydantic_core import PydanticUndefined

    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and value == "":
        return "empty"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{_number(value)}`"


def _is_secret(annotation: Any) -> bool:
    from pydantic import SecretStr

    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def _from_model_fields() -> list[dict[str, Any]]:
    from posthog_customerio.config import Settings

    rows = []
    for name, field in Settings.model_fields.items():
        kind = _type_name(field.annotation)
        bounds = _bounds(field.metadata)
        rows.append(
            {
                "field": name,
                "variable": name.upper(),
                "type": f"{kind} ({bounds})" if bounds else kind,
                "default": _default(field.default),
                "secret": _is_secret(field.annotation),
                "description": field.description or "",
            }
        )
    return rows


def _as_mapping(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    if hasattr(item, "_asdict"):
        return item._asdict()  # type: ignore[no-any-return]
    if hasattr(item, "model_dump"):
        return item.model_dump()  # type: ignore[no-any-return]
    return vars(item)


def _from_settings_reference(reference: Any) -> list[dict[str, Any]]:
    """Rows of ``settings_reference()`` in whatever reasonable shape it returns, filled from the fields."""
    base = {row["field"]: row for row in _from_model_fields()}
    items = reference.items() if isinstance(reference, Mapping) else enumerate(reference)
    rows = []
    for key, item in items:
        data = {str(k).lower(): v for k, v in _as_mapping(item).items()}
        name = data.get("field") or data.get("name")
        variable = data.get("variable") or data.get("env") or data.get("env_var") or data.get("environment")
        if not name and isinstance(key, str):
            name = key
        name = str(name or variable or "").lower()
        if name not in base:
            raise LookupError(f"settings_reference(): {name!r} is not a Settings field")
        row = dict(base[name])
        if variable:
            row["variable"] = str(variable)
        if data.get("description"):
            row["description"] = str(data["description"])
        if isinstance(data.get("group"), str) and data["group"].strip():
            row["group"] = data["group"].strip()
        if "secret" in data:
            row["secret"] = bool(data["secret"])
        if isinstance(data.get("type"), str) and data["type"].strip():
            row["type"] = data["type"]
        if isinstance(data.get("default"), str) and data["default"].strip():  # "" = none: ours says unset/empty
            row["default"] = data["default"]
        if data.get("flags") or data.get("flag"):
            flags = data.get("flags") or data.get("flag")
            row["declared_flags"] = [flags] if isinstance(flags, str) else list(flags)
        rows.append(row)
    missing = set(base) - {row["field"] for row in rows}
    rows.extend(base[name] for name in base if name in missing)
    return rows


def reference_rows() -> list[dict[str, Any]]:
    """One dict per Settings field: field, variable, flags ({flag: commands}), type, default, secret, description."""
    from posthog_customerio import config

    rows = None
    reference = getattr(config, "settings_reference", None)
    if callable(reference):
        try:
            rows = _from_settings_reference(reference())
        except Exception:  # an unexpected shape: the fields themselves still say everything
            rows = None
    if rows is None:
        rows = _from_model_fields()
    flags = cli_flags()
    helps = cli_help()
    for row in rows:
        row["flags"] = flags.get(row["variable"], {})
        if not row["description"]:  # until every field has a description: what its --help says
            row["description"] = helps.get(row["variable"], "")
        declared = [part.strip("`") for flag in row.pop("declared_flags", []) for part in str(flag).split()]
        declared = [part for flag in declared for part in flag.replace(",", "/").split("/") if part.startswith("--")]
        shown = {part for flag in row["flags"] for part in flag.replace(", ", "/").split("/")}
        missing = [flag for flag in declared if flag not in shown]
        if missing:  # flags the CLI's help does not name the variable in: listed without their commands
            row["flags"].setdefault("/".join(missing), [])
    return rows


# -- the table -------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _flags_cell(flags: Mapping[str, list[str]], every_command: set[str]) -> str:
    if not flags:
        return "—"
    parts = []
    for flag, commands in flags.items():
        if not commands or set(commands) >= every_command:
            parts.append(f"`{flag}`")
        else:
            parts.append(f"`{flag}` ({', '.join(sorted(set(commands)))})")
    return "<br>".join(parts)


def render_table(rows: list[dict[str, Any]] | None = None) -> str:
    """The Markdown of the configuration reference: one table, or one per group when the settings have groups."""
    rows = reference_rows() if rows is None else rows
    every_command: set[str] = set()  # a flag every settings-reading command takes is shown without a list
    for row in rows:
        for commands in row["flags"].values():
            every_command.update(commands)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("group") or "", []).append(row)
    parts = []
    for group, members in groups.items():
        if group and len(groups) > 1:
            parts.append(f"### {group}\n")
        parts.append(_table(members, every_command))
    return "\n".join(parts)


def _table(rows: list[dict[str, Any]], every_command: set[str]) -> str:
    lines = [
        "| variable | CLI flags (commands) | type | default | secret | description |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"`{row['variable']}`",
            _flags_cell(row["flags"], every_command),
            _cell(row["type"]),
            _cell(row["default"]),
            "yes" if row["secret"] else "",
            _cell(row["description"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- MkDocs events ---------------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    """Publish ``bench/RESULTS.md`` (kept beside the scripts) as a page of the site."""
    from mkdocs.structure.files import File

    if RESULTS.exists() and files.get_file_from_path(RESULTS_PAGE) is None:
        files.append(File.generated(config, RESULTS_PAGE, content=RESULTS.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, render_table())
    return markdown
