"""Shared helpers for the benchmark scripts (not a test module; not run in CI).

Everything binds and talks to 127.0.0.1 only. Processes started here are stopped by
their own pid. The Customer.io sandbox runs in its own process
(``posthog-customerio sandbox --port P``) so it never shares the GIL with the code
under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("posthog-customerio")
SITE_ID, API_KEY = "bench-site", "bench-key"
#: high enough that the client-side limiter (CUSTOMERIO_MAX_RPS) is never what we measure
MAX_RPS = "100000"


def cli_command() -> list[str]:
    """The command under test."""
    return [str(CLI)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> str:
    """One line describing this machine (for the results table)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}){mem}, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}; code {code_version()}"
    )


def code_version() -> str:
    """The commit under test, and whether src/ differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


# -- the sandbox in its own process --------------------------------------------------------
@dataclass
class Sandbox:
    url: str
    process: subprocess.Popen[bytes]

    def get(self, path: str, timeout: float = 120.0) -> Any:
        response = httpx.get(self.url + path, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None) -> Any:
        response = httpx.post(self.url + path, json=body if body is not None else {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.post("/_sandbox/reset")
        self.post("/_sandbox/pipelines/reset")

    def stats(self) -> dict[str, Any]:
        """The Track side's counters, with the Pipelines side's people/events added (a run uses one side)."""
        stats = self.get("/_sandbox/stats")
        pipelines = self.get("/_sandbox/pipelines/stats")
        for key in ("people", "events", "anonymous_events", "duplicates"):
            stats[key] = stats.get(key, 0) + pipelines.get(key, 0)
        return stats

    def request_totals(self) -> tuple[int, int]:
        """(requests, body bytes) of every /api and Pipelines /v1 request the sandbox logged."""
        entries = self.get("/_sandbox/requests") + self.get("/_sandbox/pipelines/requests")
        return len(entries), sum(int(entry.get("bytes") or 0) for entry in entries)


@contextlib.contextmanager
def sandbox_process() -> Iterator[Sandbox]:
    port = free_port()
    process = subprocess.Popen(
        [str(CLI), "sandbox", "--host", "127.0.0.1", "--port", str(port), "--site-id", SITE_ID, "--api-key", API_KEY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    box = Sandbox(f"http://127.0.0.1:{port}", process)
    try:
        wait_http(box.url + "/_sandbox/stats", process)
        yield box
    finally:
        stop(process)


def wait_http(url: str, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.05)


def stop(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def base_env(sandbox: Sandbox, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            (
                "CUSTOMERIO_",
                "POSTHOG_CUSTOMERIO_",
                "SQLITE_",
                "DELIVERY_",
                "ANONYMOUS_",
                "SEND_EVENTS_",
                "EVENTS_TO_SEND",
                "IDENTIFY_BY_EMAIL",
                "WEBHOOK_",
            )
        )
    }
    env.update(
        {
            "CUSTOMERIO_SITE_ID": SITE_ID,
            "CUSTOMERIO_API_KEY": API_KEY,
            "CUSTOMERIO_TRACK_URL": sandbox.url,
            "CUSTOMERIO_PIPELINES_API_KEY": "sandbox",  # the ``sandbox`` command's Pipelines key (used by mode p)
            "CUSTOMERIO_PIPELINES_URL": sandbox.url,
            "POSTHOG_CUSTOMERIO_DATA_DIR": str(data_dir),
            "CUSTOMERIO_MAX_RPS": MAX_RPS,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


# -- child processes with their peak RSS ------------------------------------------------------
@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float


def run_measured(args: list[str], env: dict[str, str], timeout: float = 1800.0) -> Finished:
    """Run a child to completion; wall time and peak RSS."""
    # Peak RSS is read from /proc/PID/status (VmHWM, the high-water mark of the
    # process's own memory since exec) while it runs: wait4's ru_maxrss would include
    # the RSS this (bigger) parent process had when it forked the child.
    started = time.monotonic()
    peak = 0.0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        deadline = started + timeout
        while process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                peak = max(peak, peak_rss_mb(process.pid))
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{args[:3]} did not finish within {timeout:.0f}s")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return Finished(
            process.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), seconds, peak
        )


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a running process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def send(file: Path, env: dict[str, str], timeout: float = 1800.0) -> tuple[dict[str, Any], Finished]:
    """``posthog-customerio send FILE --json``: (summary, process figures)."""
    finished = run_measured([*cli_command(), "send", str(file), "--json"], env, timeout)
    if finished.returncode != 0:
        raise RuntimeError(f"send exited {finished.returncode}: {finished.stderr[-2000:]}")
    return json.loads(finished.stdout), finished


# -- the event stream ---------------------------------------------------------------------------
def write_stream(path: Path, people: int, seed: int, events_per_person: int, shape: str = "plugin") -> int:
    from posthog_customerio.samples import iter_stream, write_jsonl

    return write_jsonl(iter_stream(people, seed=seed, events_per_person=events_per_person, shape=shape), path)


def request_header_bytes() -> int:
    """Bytes of the request line + headers our Track API client sends with a batch.

    Measured from the client's own header set (Basic auth, User-Agent, ...) for the
    sandbox's host; a real host name adds a few bytes.
    """
    import httpx

    from posthog_customerio.output.track import TrackClient

    # the client sends through a deadline wrapper; an httpx.Client with its options builds the same request
    url = "http://127.0.0.1:18765"
    with TrackClient(SITE_ID, API_KEY, url) as client, httpx.Client(**client._http._options) as http:
        request = http.build_request("POST", "/api/v2/batch", content=b"{}")
    head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in request.headers.items()) + "\r\n"
    return len(head.encode()) - len("2")  # Content-Length differs per request; ~1-6 digits


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in text)) for i in range(len(headers))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, text)])
