"""The documentation: the MkDocs site under docs/ builds with --strict, its configuration reference is the
code's, and the README stays a short entry page whose links resolve."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
HOOK = DOCS / "hooks" / "config_reference.py"
CI_TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]' && pytest -q"


def config_reference_module() -> ModuleType:
    """``docs/hooks/config_reference.py``, the hook that renders the configuration reference."""
    spec = importlib.util.spec_from_file_location("docs_config_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doc_page(name: str) -> str:
    """The Markdown source of ``docs/<name>``."""
    return (DOCS / name).read_text(encoding="utf-8")


def documented_mkdocs_build() -> list[str]:
    """The ``mkdocs build`` command line docs/development.md gives, as words."""
    lines = [line for line in doc_page("development.md").splitlines() if line.startswith("mkdocs build")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0], comments=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built by the documented command (``mkdocs build --strict``: a warning is a failure)."""
    if importlib.util.find_spec("mkdocs") is None:
        unavailable("mkdocs is needed to build the docs (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("site")
    words = documented_mkdocs_build()
    assert "--strict" in words and "--site-dir" in words
    words[words.index("--site-dir") + 1] = str(out)  # a temporary directory instead of the documented one
    done = subprocess.run([sys.executable, "-m", *words], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    return out


def test_the_docs_build_with_strict(site: Path) -> None:
    for page in ["index", "getting-started", "configuration", "http-api", "semantics", "operations"]:
        assert (site / ("index.html" if page == "index" else f"{page}/index.html")).is_file(), page
    assert (site / "benchmark-results" / "index.html").is_file()  # bench/RESULTS.md, published by the hook


def test_every_setting_is_in_the_built_configuration_reference(site: Path) -> None:
    from posthog_customerio.config import Settings

    html = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "settings-reference" not in html  # the marker was replaced
    for name in Settings.model_fields:
        assert f"<code>{name.upper()}</code>" in html, f"{name.upper()} is not in the configuration reference"


def test_the_reference_has_a_row_per_setting_with_its_type_default_and_secrecy() -> None:
    from pydantic import SecretStr

    from posthog_customerio.config import Settings

    rows = {row["variable"]: row for row in config_reference_module().reference_rows()}
    assert set(rows) == {name.upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        row = rows[name.upper()]
        assert row["type"] and row["default"], name
        assert row["secret"] == ("SecretStr" in str(field.annotation) or field.annotation is SecretStr), name
    assert rows["CUSTOMERIO_API_KEY"]["secret"] and not rows["CUSTOMERIO_REGION"]["secret"]
    assert "--max-rps" in rows["CUSTOMERIO_MAX_RPS"]["flags"]


def test_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 260
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [target for target in targets if not re.match(r"[a-z]+:", target) and not target.startswith("#")]
    assert local, "the README links no documentation page"
    for target in local:
        assert (ROOT / target.split("#")[0]).exists(), f"README links {target}, which does not exist"
    linked = {(ROOT / target.split("#")[0]).resolve() for target in local}
    for page in DOCS.glob("*.md"):
        assert page.resolve() in linked, f"the README does not link {page.relative_to(ROOT)}"


def test_readme_holds_the_two_setup_commands_verbatim() -> None:
    text = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert CI_TEST_COMMAND in ci and CI_TEST_COMMAND in text
    quick_start = "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . && posthog-customerio send"
    assert quick_start in text
    assert 'pytest -q -m "not e2e and not reliability"' in text  # how to run the fast tier


def _settings_table_rows(text: str) -> dict[str, list[str]]:
    """``| `VARIABLE` | flags | …`` rows of a hand-written table: variable → the flags it names, each checked real."""
    import typer.main

    from posthog_customerio.cli import app

    group = typer.main.get_command(app)
    params = [param for command in group.commands.values() for param in command.params]  # type: ignore[attr-defined]
    flags = {opt for param in params for opt in [*param.opts, *param.secondary_opts]}
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z_]+)` \| ([^|]*) \|", text, re.MULTILINE)}
    named = {variable: re.findall(r"`(--[a-z-]+)`", cell) for variable, cell in rows.items()}
    for variable, found in named.items():
        assert found, f"{variable} has no flag in the table"
        for flag in found:
            assert flag in flags, f"{variable}: {flag} is not a flag of any command"
    return named


def test_the_settings_explained_in_words_are_the_code_s() -> None:
    """docs/configuration.md's hand-written table ("What each setting means"): each row a setting, its flags real.

    Completeness is the generated reference's job (a new setting appears there with its description)."""
    from posthog_customerio.config import Settings

    table = doc_page("configuration.md").split("## What each setting means")[1].split("\n## ")[0]
    rows = _settings_table_rows(table)
    assert len(rows) >= 40 and set(rows) <= {name.upper() for name in Settings.model_fields}


def test_the_readme_essentials_are_settings_with_real_flags() -> None:
    from posthog_customerio.config import Settings

    text = README.read_text(encoding="utf-8")
    table = text.split("## Configuration essentials")[1].split("\n## ")[0]
    rows = _settings_table_rows(table)
    assert len(rows) >= 8 and set(rows) <= {name.upper() for name in Settings.model_fields}


def test_each_test_tier_the_readme_names_selects_tests() -> None:
    """The README's tier commands, as typed (with ``--collect-only``): each selects tests, and the fast tier
    leaves out every test the other tiers select."""
    section = README.read_text(encoding="utf-8").split("## Tests")[1].split("\n## ")[0]
    commands = [shlex.split(line, comments=True) for line in section.splitlines() if line.startswith("pytest ")]
    assert len(commands) == 3, commands
    selected = {}
    for words in commands:
        done = subprocess.run(
            [sys.executable, "-m", *words, "--collect-only", "-p", "no:cacheprovider"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        ids = {line for line in done.stdout.splitlines() if "::" in line}
        assert ids, f"{' '.join(words)} selects no test"
        selected[words[-1]] = ids
    fast = selected["not e2e and not reliability"]
    assert not fast & (selected["e2e"] | selected["reliability"])
