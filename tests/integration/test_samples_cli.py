"""``python -m posthog_customerio.samples`` as a subprocess (split from ``tests/unit/test_samples.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from posthog_customerio import samples
from posthog_customerio.samples import generate_session_events


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    src = str(Path(samples.__file__).parents[1])
    subprocess.run(
        [
            sys.executable,
            "-m",
            "posthog_customerio.samples",
            "--people",
            "4",
            "--seed",
            "2",
            "--shape",
            "capture",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        env={"PYTHONPATH": src},
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == generate_session_events(4, seed=2, shape="capture")
