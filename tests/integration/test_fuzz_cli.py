"""``send`` survives hostile lines, through the CLI and the in-process sandbox (split from unit/test_fuzz.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..unit.test_fuzz import _event

pytestmark = pytest.mark.reliability


def test_send_survives_lines_nested_near_the_recursion_limit(cli: Any, tmp_path: Path) -> None:
    lines = [json.dumps(_event(distinct_id="ok-1"))]
    for depth in range(850, 1000, 2):
        deep = "[" * depth + "]" * depth
        lines.append(f'{{"event": "x", "distinct_id": "d{depth}", "properties": {{"$set": {{"deep": {deep}}}}}}}')
    (tmp_path / "deep.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("send", "--sandbox", str(tmp_path / "deep.jsonl"), "--json")
    assert result.exit_code in (0, 1)
    assert json.loads(result.stdout[result.stdout.index("{") :])["read"] == len(lines)


def test_send_survives_a_lone_surrogate_escape(cli: Any, tmp_path: Path) -> None:
    lines = [
        json.dumps(_event(distinct_id="ok-1")),
        json.dumps(_event(distinct_id="bad-1", properties={"s": "\ud800"})),
    ]
    (tmp_path / "surrogate.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("send", "--sandbox", str(tmp_path / "surrogate.jsonl"), "--json")
    assert result.exit_code in (0, 1)
