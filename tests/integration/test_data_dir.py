"""``--data-dir DIR`` is the user's directory: ``send``, ``serve`` and ``consume`` never delete it.

Only the throwaway directory that ``--sandbox`` makes when no data dir was chosen is removed.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

from posthog_customerio.sandbox import SandboxServer

from .. import helpers
from ..conftest import Cli, write_jsonl
from ..helpers import free_port, wait_serving

SCRIPT = str(Path(sys.executable).with_name("posthog-customerio"))
ev = functools.partial(helpers.ev, t0=1_767_600_000)


def test_send_with_data_dir_keeps_the_directory_and_its_queue(cli: Cli, tmp_path: Path, sandbox: SandboxServer) -> None:
    data = tmp_path / "d"
    events = write_jsonl(tmp_path / "events.jsonl", [ev("signed_up", "u1", 0), ev("clicked", "u1", 1)])
    env = {"CUSTOMERIO_SITE_ID": "s", "CUSTOMERIO_API_KEY": "k", "CUSTOMERIO_TRACK_URL": "http://127.0.0.1:1"}
    result = cli("send", "--data-dir", str(data), "--timeout", "3", str(events), env=env)
    assert result.exit_code == 1, result.output
    assert "still queued" in result.output
    assert (data / "posthog-customerio.sqlite").exists(), "the user's --data-dir was deleted"
    # the queued operations are still there: a second run delivers them
    env = {**env, "CUSTOMERIO_SITE_ID": helpers.SITE_ID, "CUSTOMERIO_API_KEY": helpers.API_KEY}
    env["CUSTOMERIO_TRACK_URL"] = sandbox.url
    empty = write_jsonl(tmp_path / "none.jsonl", [])
    result = cli("send", "--data-dir", str(data), str(empty), env=env)
    assert result.exit_code == 0, result.output
    assert sorted(e["name"] for e in sandbox.state.events()) == ["clicked", "signed_up"]


def test_send_sandbox_with_data_dir_keeps_the_directory(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "mine"
    events = write_jsonl(tmp_path / "events.jsonl", [ev("signed_up", "u1", 0)])
    result = cli("send", "--sandbox", "--data-dir", str(data), str(events), env={})
    assert result.exit_code == 0, result.output
    assert (data / "posthog-customerio.sqlite").exists()


def test_serve_with_data_dir_keeps_the_directory(tmp_path: Path) -> None:
    data = tmp_path / "served"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTOMERIO_", "POSTHOG_CUSTOMERIO"))}
    process = subprocess.Popen(
        [SCRIPT, "serve", "--sandbox", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_serving(f"http://127.0.0.1:{port}", process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert (data / "posthog-customerio.sqlite").exists(), "serve deleted the user's --data-dir"
