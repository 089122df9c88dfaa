"""Which project modules the event model and the mapping load, in a fresh interpreter (from unit/test_units.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("posthog_customerio.events", set()),
        (
            "posthog_customerio.mapping",
            {"events", "ids", "limits", "mapping", "operations", "state"},
        ),
    ],
)
def test_the_event_model_and_the_mapping_sit_below_the_sources_and_the_storage(module: str, allowed: set[str]) -> None:
    """The event model imports nothing of the project; the mapping only the model and what it is made of."""
    code = (
        f"import json, sys, {module}; "
        "print(json.dumps([name for name in sys.modules if name.startswith('posthog_customerio.')]))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert {name.split(".")[1] for name in loaded} <= allowed | {module.split(".")[1]}
