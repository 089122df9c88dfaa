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
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, NamedTuple

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
    command = [str(CLI), "sandbox", "--host", "127.0.0.1", "--site-id", SITE_ID, "--api-key", API_KEY]
    with running_server(command, "/_sandbox/stats") as (url, process):
        yield Sandbox(url, process)


# -- a script's own Customer.io stand-in (its own process) ----------------------------------------
@dataclass
class StandIn:
    """A bench script's own Customer.io stand-in, in its own process (``python SCRIPT _standin ... --port P``, served
    with :func:`serve_json`); a ``with`` block or :meth:`close` stops it."""

    url: str
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, script: Path, *args: str) -> StandIn:
        """``python SCRIPT _standin ARGS --port P`` on a free port, once its ``/_bench/stats`` answers."""
        url, process = start_server([sys.executable, str(script), "_standin", *args], "/_bench/stats")
        return cls(url, process)

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, timeout=60)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        stop(self.process, timeout=10)

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Reply(NamedTuple):
    """A stand-in's answer to one request: its status, a payload sent as JSON, and headers besides the usual."""

    status: int
    payload: Any
    headers: dict[str, str] | None = None


def serve_json(port: int, route: Callable[[str, str, bytes], Reply]) -> None:
    """Serve a stand-in on 127.0.0.1:``port`` until the process is stopped: HTTP/1.1, a (daemon) thread per
    connection, a listen backlog of 256, no request log. Every request's body is read whole; the region lookup
    (``/api/v1/accounts/region``: not made with a URL override) is answered with this server's URL, any other request
    with ``route(method, path without its query, body)``, the payload as compact JSON."""
    region = Reply(200, {"url": f"http://127.0.0.1:{port}", "region": "us"})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            status, payload, headers = region if path == "/api/v1/accounts/region" else route(self.command, path, raw)
            data = json.dumps(payload, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PUT = do_GET = do_DELETE = _handle

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    Server(("127.0.0.1", port), Handler).serve_forever()


# -- server processes on a free loopback port -------------------------------------------------------
def start_server(
    command: list[str],
    health: str,
    *,
    port_flag: str = "--port",
    env: dict[str, str] | None = None,
    output: IO[bytes] | None = None,
    timeout: float = 30.0,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``command port_flag PORT`` on a free 127.0.0.1 port, its stdout and stderr to ``output`` (default:
    discarded): (its base URL, the process) once ``GET health`` answers 200 within ``timeout`` (see
    :func:`wait_http`). A process that does not is stopped."""
    port = free_port()
    process = subprocess.Popen(
        [*command, port_flag, str(port)],
        env=env,
        stdout=subprocess.DEVNULL if output is None else output,
        stderr=subprocess.DEVNULL if output is None else subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + health, process, timeout=timeout)
    except BaseException:
        stop(process)
        raise
    return url, process


@contextlib.contextmanager
def running_server(
    command: list[str],
    health: str,
    *,
    port_flag: str = "--port",
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    stop_timeout: float = 30.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`start_server` for the length of a ``with`` block, then :func:`stop` (``stop_timeout``)."""
    url, process = start_server(command, health, port_flag=port_flag, env=env, timeout=timeout)
    try:
        yield url, process
    finally:
        stop(process, timeout=stop_timeout)


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


def base_env(sandbox: Sandbox | StandIn, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a child under test: this one without the product's settings, then Customer.io (Track and
    Pipelines) at ``sandbox`` (the sandbox or a script's stand-in: only its URL is read), ``data_dir``, JSON logs,
    ``MAX_RPS``; then ``extra``."""
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


#: clock ticks per second, the unit of /proc's CPU times
CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system: ``utime`` + ``stime`` of ``/proc/PID/stat``) process ``pid`` has used so far, its
    children not included. ``OSError`` once the process is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def send(file: Path, env: dict[str, str], timeout: float = 1800.0) -> tuple[dict[str, Any], Finished]:
    """``posthog-customerio send FILE --json``: (summary, process figures)."""
    finished = run_measured([*cli_command(), "send", str(file), "--json"], env, timeout)
    if finished.returncode != 0:
        raise RuntimeError(f"send exited {finished.returncode}: {finished.stderr[-2000:]}")
    return json.loads(finished.stdout), finished


# -- py-spy profiles ------------------------------------------------------------------------------------
def find_py_spy() -> str | None:
    """The py-spy executable (on ``PATH`` or beside this Python), or ``None``: a profiling tool, not a dependency."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def py_spy_attach(spy: str, pid: int, rate: int, seconds: int, output: Path) -> subprocess.CompletedProcess[str]:
    """``py-spy record --nonblocking`` attached to the running process ``pid`` for ``seconds`` at ``rate`` samples
    a second, its raw (collapsed) stacks written to ``output``."""
    return subprocess.run(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def short_frame(frame: str) -> str:
    """``function (file)`` of a py-spy frame, its line number dropped and its path cut after ``site-packages/``,
    ``src/`` or ``lib/python3``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


#: leaf frames (:func:`short_frame`) of a thread waiting: py-spy's idle detection misses some of them. ``Runner.run``
#: as a leaf is the event loop's C code (uvloop).
WAITING_FRAMES = (
    "Condition.wait ",
    "Event.wait ",
    "Queue.get ",
    "sleep ",
    "select ",
    "Runner.run ",
    "SyncStream.read ",
    "is_socket_readable ",
    "BaseSelector",
    "EpollSelector.select ",
    "_worker ",
)


def raw_stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """(frames, outermost first, each :func:`short_frame`; samples) of every stack in a py-spy raw file, its process
    and thread frames left out (a stack of nothing else too)."""
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [short_frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if frames:
            yield frames, int(count_text)


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
