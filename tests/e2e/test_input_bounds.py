"""Input is bounded and checked before it costs anything: auth first, off-loop parsing,
MAX_EVENTS_PER_REQUEST, read deadlines for slow clients, bounded memory."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_customerio.config import Settings
from posthog_customerio.ingestion import GroupCommitter
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.service import ingest_routes
from posthog_customerio.sources import TooManyEvents, loads_strict, parse_payload
from posthog_customerio.sources.json_bounded import loads_bounded

from ..helpers import free_port, make_settings, wait_for, wait_serving
from ..service import running_service

pytestmark = pytest.mark.e2e
TOKEN = "capture-token-1234"


def _settings(sandbox: SandboxServer, tmp_path: Path, **extra: Any) -> Settings:
    return make_settings(tmp_path / "data", sandbox, **extra)


@contextmanager
def service(sandbox: SandboxServer, tmp_path: Path, **extra: Any) -> Iterator[tuple[str, Runtime]]:
    runtime = Runtime(_settings(sandbox, tmp_path, **extra))
    with running_service(runtime, deliver=False) as url:
        yield url, runtime


def _events(count: int, prefix: str = "user") -> list[dict[str, Any]]:
    return [{"event": "e", "distinct_id": f"{prefix}-{i}", "api_key": "x"} for i in range(count)]


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# -- bounded top-level parsing ---------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "[1, 2, 3]",
        ' [ {"a": [1, {"b": 2}]} , "x" ] ',
        "{}",
        '{"batch": []}',
        '{"api_key": "k", "batch": [{"a": 1}]}',
        '{"batch": {"a": 1}}',
        '"text"',
        "3",
        "null",
        '{"a": "\\u00e9\\ud83d\\ude00", "batch": [1.5e3, -2]}',
    ],
)
def test_bounded_parsing_gives_what_json_gives(text: str) -> None:
    assert loads_strict(text, 10) == json.loads(text)
    assert loads_strict(text.encode(), 10) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        "[1,]",
        "[1 2]",
        "[",
        '{"batch": [1,]}',
        '{"a" 1}',
        '{"a": 1,}',
        "{a: 1}",
        "[1] x",
        "[NaN]",
        '{"x": 1e999}',
        '["\\ud800"]',
    ],
)
def test_bounded_parsing_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        loads_strict(text)
    with pytest.raises(ValueError) as caught:
        loads_strict(text, 10)
    assert not isinstance(caught.value, TooManyEvents)


def test_bounded_parsing_stops_at_one_element_past_the_limit() -> None:
    assert len(loads_strict(json.dumps(list(range(5))), 5)) == 5
    with pytest.raises(TooManyEvents):
        loads_strict(json.dumps(list(range(6))), 5)
    with pytest.raises(TooManyEvents):
        loads_strict(json.dumps({"api_key": "k", "batch": [{}] * 6}), 5)
    # a million elements: refused at element 6 although the rest is not even valid JSON
    with pytest.raises(TooManyEvents):
        loads_strict(b"[" + b"{}," * 1_000_000 + b"broken", 5)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)
_DOCUMENTS = _JSON_VALUES | st.dictionaries(
    st.sampled_from(["batch", "api_key", "x"]), st.lists(_JSON_VALUES, max_size=5), max_size=3
)


@settings(max_examples=400, deadline=None)
@given(
    _DOCUMENTS,
    st.sampled_from(["", " ", "\n\t", " \r\n "]),
    st.integers(0, 40),
    st.sampled_from(["", ",", "]", "}", ":", '"', "x", " 1"]),
)
def test_the_bounded_decoder_is_the_standard_decoder_with_a_count(value: Any, space: str, cut: int, junk: str) -> None:
    """Valid or broken, a text gives what ``json.JSONDecoder`` gives: the same value, or the same error and position."""
    text = json.dumps(value, separators=(f"{space},{space}", f"{space}:{space}"))
    text = f"{space}{text}{space}"
    if junk:  # break it somewhere
        at = min(cut, len(text))
        text = text[:at] + junk + text[at:]
    decoder = json.JSONDecoder()
    try:
        expected: Any = decoder.decode(text)
    except json.JSONDecodeError as exc:
        expected = (exc.msg, exc.pos)
    try:
        got: Any = loads_bounded(text, 1_000, decoder)
    except json.JSONDecodeError as exc:
        got = (exc.msg, exc.pos)
    assert got == expected


# -- credentials first, work off the event loop ----------------------------------------------
def test_webhook_with_a_wrong_token_is_refused_before_its_body_is_sent(sandbox: SandboxServer, tmp_path: Path) -> None:
    with service(sandbox, tmp_path, webhook_token=TOKEN) as (url, _):
        sock = _connect(url)
        sock.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer wrong\r\nContent-Length: 4900000\r\n\r\n["
        )
        head = _read_response(sock)  # answered although 4,899,999 bytes are still to come
        sock.close()
    assert head.startswith(b"HTTP/1.1 401"), head


def test_unauthenticated_big_capture_body_gets_401_and_healthz_keeps_answering(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed_on: list[str] = []
    original = ingest_routes.decode_body

    def observed(*args: Any) -> Any:
        parsed_on.append(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(ingest_routes, "decode_body", observed)
    # 4.9 MB that would be costly to parse (and is not even valid JSON: 401 proves it was never parsed)
    body = json.dumps(_events(85_000)).replace('"api_key": "x"', '"api_key": "nope"').encode()[:4_900_000]
    with service(sandbox, tmp_path, webhook_token=TOKEN) as (url, runtime):
        sock = _connect(url)
        sock.sendall(
            b"POST /batch/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2]
        )
        # the big request is in flight (half its body sent): the service still answers
        for _ in range(3):
            assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        sock.sendall(body[len(body) // 2 :])
        head = _read_response(sock)
        sock.close()
        assert head.startswith(b"HTTP/1.1 401"), head[:200]
        # the same body gzip-compressed, many times over, while /healthz is polled beside it
        packed = gzip.compress(body)
        answers: list[int] = []
        done = threading.Event()

        def flood() -> None:
            with httpx.Client(timeout=60) as client:
                for _ in range(5):
                    answers.append(
                        client.post(
                            f"{url}/batch",
                            content=packed,
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
                        ).status_code
                    )
            done.set()

        thread = threading.Thread(target=flood)
        thread.start()
        healthz_answers = 0
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                assert client.get(f"{url}/healthz").status_code == 200
                healthz_answers += 1
        thread.join(60)
        assert answers == [401] * 5
        assert healthz_answers >= 1
        assert runtime.outbox.depth() == 0
    assert parsed_on and all(name != "uvicorn-test" for name in parsed_on), parsed_on


def test_a_payload_token_still_authorises_capture(sandbox: SandboxServer, tmp_path: Path) -> None:
    with service(sandbox, tmp_path, webhook_token=TOKEN) as (url, _runtime):
        body = {"api_key": TOKEN, "batch": [{"event": "e", "distinct_id": "u1"}]}
        assert httpx.post(f"{url}/batch", json=body).status_code == 200
        wrong = {"api_key": "x" + TOKEN, "batch": [{"event": "e", "distinct_id": "u1"}]}
        assert httpx.post(f"{url}/batch", json=wrong).status_code == 401
        gz = gzip.compress(json.dumps(body).encode())
        answer = httpx.post(f"{url}/batch", content=gz, headers={"Content-Encoding": "gzip"})
        assert answer.status_code == 200, answer.text


# -- MAX_EVENTS_PER_REQUEST ------------------------------------------------------------------
def test_many_empty_gzip_members_are_refused_at_once_and_healthz_keeps_answering(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Issue 16.6: 245,000 empty gzip members (4.9 MB) took 17-21 s of CPU each before the 401."""
    members = gzip.compress(b"", mtime=0) * 245_000
    with service(sandbox, tmp_path, webhook_token=TOKEN) as (url, runtime):
        answers: dict[str, tuple[int, float]] = {}

        def post(path: str, headers: dict[str, str]) -> None:
            started = time.monotonic()
            with httpx.Client(timeout=60) as client:
                status = client.post(f"{url}{path}", content=members, headers=headers).status_code
            answers[path] = (status, time.monotonic() - started)

        requests = [
            # the token can only be in the body: decoded, cheaply, up to MAX_GZIP_MEMBERS (400)
            ("/batch/", {"Content-Type": "text/plain"}),
            ("/e/", {"Content-Encoding": "gzip"}),
            ("/i/v0/e/", {"Authorization": f"Bearer {TOKEN}"}),  # authorised: the member bound refuses it
            ("/webhook", {"Content-Encoding": "gzip"}),  # no Bearer: refused before the body is read
        ]
        threads = [threading.Thread(target=post, args=request) for request in requests]
        for thread in threads:
            thread.start()
        slowest_healthz = 0.0
        with httpx.Client(timeout=30) as client:
            while any(thread.is_alive() for thread in threads):
                started = time.monotonic()
                assert client.get(f"{url}/healthz").status_code == 200
                slowest_healthz = max(slowest_healthz, time.monotonic() - started)
        for thread in threads:
            thread.join(60)
        statuses = {path: status for path, (status, _) in answers.items()}
        assert statuses == {"/batch/": 400, "/e/": 400, "/i/v0/e/": 400, "/webhook": 401}, answers
        assert max(elapsed for _, elapsed in answers.values()) < 2.0, answers
        assert slowest_healthz < 1.0
        assert runtime.outbox.depth() == 0
        # ordinary gzip bodies still work: one member, and several
        body = json.dumps({"api_key": TOKEN, "batch": [{"event": "e", "distinct_id": "gz-1"}]}).encode()
        one = httpx.post(f"{url}/batch/", content=gzip.compress(body), headers={"Content-Type": "text/plain"})
        assert one.status_code == 200, one.text
        several = b"".join(gzip.compress(body[i : i + 10]) for i in range(0, len(body), 10))
        assert httpx.post(f"{url}/e/", content=several, headers={"Content-Encoding": "gzip"}).status_code == 200


def test_requests_over_max_events_per_request_get_413_and_store_nothing(sandbox: SandboxServer, tmp_path: Path) -> None:
    with service(sandbox, tmp_path, max_events_per_request=5) as (url, runtime):
        for body in (_events(6), {"api_key": "k", "batch": _events(6)}):
            answer = httpx.post(f"{url}/batch", json=body)
            assert answer.status_code == 413
            assert "MAX_EVENTS_PER_REQUEST" in answer.json()["error"] and "5" in answer.json()["error"]
        v1 = httpx.post(
            f"{url}/i/v1/analytics/events",
            json={
                "batch": [
                    {"event": "e", "distinct_id": f"u{i}", "uuid": f"0190a0a0-0000-7000-8000-00000000000{i}"}
                    for i in range(6)
                ]
            },
        )
        assert v1.status_code == 413
        assert runtime.outbox.depth() == 0
        assert httpx.post(f"{url}/batch", json=_events(5)).status_code == 200
        assert runtime.ingestor.totals.events == 5


def test_small_requests_waiting_beside_a_big_one_commit_first(tmp_path: Path) -> None:
    settings = Settings(posthog_customerio_data_dir=tmp_path, sqlite_synchronous="NORMAL")
    runtime = Runtime(settings, sandbox=True)
    try:
        committer = GroupCommitter(runtime.ingestor, max_group_events=100)
        big = parse_payload(_events(500, "big"))
        small = parse_payload(_events(1, "small"))
        first = parse_payload(_events(1, "first"))
        threads = [threading.Thread(target=committer.ingest, args=(events, "test")) for events in (first, big, small)]
        with runtime.db.lock:  # the committer takes the first request, then waits for this lock
            threads[0].start()
            wait_for(lambda: committer._queue.qsize() == 0, "queue size 0", interval=0.005)
            threads[1].start()
            wait_for(lambda: committer._queue.qsize() == 1, "queue size 1", interval=0.005)
            threads[2].start()
            wait_for(lambda: committer._queue.qsize() == 2, "queue size 2", interval=0.005)
        for thread in threads:
            thread.join(30)
        with runtime.db.reading() as conn:
            rows = conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
        order = [("big" if "big-" in row[0] else "small" if "small-" in row[0] else "first") for row in rows]
        first_seen = list(dict.fromkeys(order))
        assert first_seen == ["first", "small", "big"], first_seen
    finally:
        runtime.close(grace_s=0)


# -- slow clients ----------------------------------------------------------------------------
def test_slow_clients_are_closed_after_the_read_timeout_and_never_delay_others(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    timeout_s = 3.0
    with service(sandbox, tmp_path, http_read_timeout_s=timeout_s) as (url, _):
        started = time.monotonic()
        slow: list[socket.socket] = []
        for index in range(200):
            sock = _connect(url)
            if index % 2:  # complete headers, then a body that trickles
                sock.sendall(
                    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n["
                )
            else:  # headers that trickle
                sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        closed_at: dict[int, float] = {}
        answers: dict[int, bytes] = {}
        stop = threading.Event()

        def trickle() -> None:  # a byte every 0.2 s on every connection still open
            while not stop.is_set() and len(closed_at) < len(slow):
                for index, sock in enumerate(slow):
                    if index in closed_at:
                        continue
                    try:
                        sock.send(b"X" if index % 2 == 0 else b" ")
                    except OSError:
                        closed_at.setdefault(index, time.monotonic())
                stop.wait(0.2)

        def watch() -> None:
            import selectors

            selector = selectors.DefaultSelector()
            for index, sock in enumerate(slow):
                selector.register(sock, selectors.EVENT_READ, index)
            deadline = time.monotonic() + 60
            while len(closed_at) < len(slow) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.5):
                    index = key.data
                    try:
                        chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except OSError:
                        chunk = b""
                    answers[index] = answers.get(index, b"") + chunk
                    if not chunk:
                        closed_at.setdefault(index, time.monotonic())
                        selector.unregister(key.fileobj)

        threads = [threading.Thread(target=trickle), threading.Thread(target=watch)]
        for thread in threads:
            thread.start()
        try:
            # normal requests are answered while the 200 slow connections are open
            with httpx.Client(timeout=30) as client:
                for _ in range(5):
                    assert client.get(f"{url}/healthz").status_code == 200
                    assert client.post(f"{url}/webhook", json={"event": "e", "distinct_id": "u"}).status_code == 200
            normal_done = time.monotonic()
            threads[1].join(90)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            for sock in slow:
                sock.close()
        assert len(closed_at) == 200, f"{200 - len(closed_at)} slow connections still open"
        assert min(closed_at.values()) - started >= timeout_s * 0.95  # the deadline, not earlier
        assert normal_done < max(closed_at.values())
        # headers never completed: a 408 (when the client's own late bytes did not reset it away)
        header_trickles = [answers.get(i, b"") for i in range(0, 200, 2)]
        assert any(answer.startswith(b"HTTP/1.1 408") for answer in header_trickles)
        assert all(answer.startswith(b"HTTP/1.1 408") or not answer for answer in header_trickles)


def test_an_idle_keep_alive_connection_is_closed_after_http_keep_alive_s(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    with service(sandbox, tmp_path, http_keep_alive_s=1.0, http_read_timeout_s=60.0) as (url, _):
        sock = _connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        sock.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert 0.9 <= time.monotonic() - started < 30


def test_serve_flags_set_the_new_limits(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    bad = cli("serve", "--sandbox", "--max-events-per-request", "0", env=env)
    assert bad.exit_code == 2 and "MAX_EVENTS_PER_REQUEST" in bad.output
    bad = cli("serve", "--sandbox", "--timeout-keep-alive", "-1", env=env)
    assert bad.exit_code == 2 and "HTTP_KEEP_ALIVE_S" in bad.output
    bad = cli("serve", "--sandbox", "--http-read-timeout-s", "0", env=env)
    assert bad.exit_code == 2 and "HTTP_READ_TIMEOUT_S" in bad.output


# -- request heads: bounded size and count, 431 -----------------------------------------------
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/PID/status")


def _send_head(url: str, first: bytes, filler: bytes, repeat: int, last: bytes = b"") -> tuple[bytes, float, int]:
    """Send ``first``, ``filler`` ``repeat`` times and ``last`` (as long as the server reads), then read the answer.

    Returns the answer (up to the end of its head, or what came before the connection closed),
    the seconds it took and the bytes sent.
    """
    started = time.monotonic()
    sock = _connect(url)
    sent = 0
    try:
        sock.sendall(first)
        sent += len(first)
        for _ in range(repeat):
            sock.sendall(filler)
            sent += len(filler)
        sock.sendall(last)
        sent += len(last)
    except OSError:  # the server answered and stopped reading
        pass
    answer = b""
    try:
        answer = _read_response(sock)
    except OSError:  # reset: what arrived before it is lost
        pass
    finally:
        sock.close()
    return answer, time.monotonic() - started, sent


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read VmRSS")
def test_huge_or_too_many_request_headers_get_431_in_bounded_time_and_memory(env: dict[str, str]) -> None:
    """Issue 16.5: one 64 MB header was answered 200 with RSS 75 -> 204 MB; six in parallel reached 514 MB."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "posthog_customerio", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        with httpx.Client(timeout=30) as client:  # warm up: the first requests allocate what they keep
            for _ in range(20):
                client.post(f"{url}/webhook", json={"event": "e", "distinct_id": "warm"})
        baseline_kb = _rss_kb(process.pid)
        megabyte = b"a" * 1_000_000
        results: list[tuple[bytes, float, int]] = []
        clients = [
            threading.Thread(
                target=lambda: results.append(
                    _send_head(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", megabyte, 64, b"\r\n\r\n")
                )
            )
            for _ in range(6)
        ]
        many = b"X-Many: 1\r\n" * 10_000  # 120 kB of small headers: over the count, and over the size
        few_many = b"".join(b"X-H%d: 1\r\n" % i for i in range(200))  # 2 kB, but 200 headers
        clients.append(
            threading.Thread(
                target=lambda: results.append(
                    _send_head(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", many, 1, b"\r\n")
                )
            )
        )
        clients.append(
            threading.Thread(
                target=lambda: results.append(
                    _send_head(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + few_many + b"\r\n", b"", 0)
                )
            )
        )
        peak_kb = baseline_kb
        slowest_normal = 0.0
        for thread in clients:
            thread.start()
        with httpx.Client(timeout=30) as client:
            while any(thread.is_alive() for thread in clients):
                started = time.monotonic()
                assert client.get(f"{url}/healthz").status_code == 200
                slowest_normal = max(slowest_normal, time.monotonic() - started)
                peak_kb = max(peak_kb, _rss_kb(process.pid))
        for thread in clients:
            thread.join(60)
        peak_kb = max(peak_kb, _rss_kb(process.pid))
        assert len(results) == 8
        for answer, elapsed, sent in results:
            assert answer.startswith(b"HTTP/1.1 431"), (answer[:200], sent)
            assert elapsed < 15, elapsed
        assert slowest_normal < 2.0, slowest_normal
        assert (peak_kb - baseline_kb) / 1024 < 40, f"RSS {baseline_kb / 1024:.0f} -> {peak_kb / 1024:.0f} MB"
        # ordinary heads are untouched: a browser's worth of headers and cookies
        browser = {f"X-Header-{i}": "v" * 100 for i in range(40)} | {"Cookie": "c=" + "x" * 8_000}
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{url}/healthz", headers=browser).status_code == 200
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(60)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_request_head_bounds_and_pipelined_answers_in_order(sandbox: SandboxServer, tmp_path: Path) -> None:
    from posthog_customerio.service.http_timeouts import MAX_HEAD_BYTES, MAX_HEADERS

    with service(sandbox, tmp_path) as (url, _):
        # just under both bounds: answered
        fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 640) for i in range(MAX_HEADERS - 2))
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n"
        assert MAX_HEAD_BYTES - 4_000 < len(head) <= MAX_HEAD_BYTES
        with _connect(url) as sock:
            sock.sendall(head)
            assert _read_all(sock).startswith(b"HTTP/1.1 200")
        # one field more, or a head over the size in a single write: 431
        over_count = head.replace(b"Connection: close", b"X-One: more\r\nConnection: close")
        over_size = head.replace(b"Host: x\r\n", b"Host: x\r\nX-Big: " + b"b" * 5_000 + b"\r\n")
        for bad in (over_count, over_size):
            with _connect(url) as sock:
                sock.sendall(bad)
                answer = _read_all(sock)
            assert answer.startswith(b"HTTP/1.1 431") and answer.count(b"HTTP/1.1") == 1, answer[:300]
        # pipelined: the request before the refused one is answered first, then the 431
        with _connect(url) as sock:
            sock.sendall(
                b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n"
                b'{"event": "e", "distinct_id": "p-1"}' + over_size
            )
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 431" in answer, answer[:300]
        assert answer.index(b"HTTP/1.1 431") > answer.index(b'"accepted"')


# -- memory: a serve process on the probe's inputs -------------------------------------------
def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.mark.reliability
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read VmHWM")
def test_serve_stays_under_200_mb_on_the_probe_inputs(env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("posthog-customerio")), "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        with httpx.Client(timeout=120, headers={"Content-Type": "application/json"}) as client:
            many_people = json.dumps([{"event": "e", "distinct_id": f"person-{i}"} for i in range(100_000)]).encode()
            assert 3_000_000 < len(many_people) < 5_000_000
            assert client.post(f"{url}/batch", content=many_people).status_code == 413
            empties = b"[" + b",".join([b"{}"] * 1_000_000) + b"]"
            assert client.post(f"{url}/batch", content=empties).status_code == 413
            # the largest request that is accepted: 10,000 people with an email each
            biggest = [
                {"event": "e", "distinct_id": f"p-{i}", "properties": {"$set": {"email": f"p{i}@example.com"}}}
                for i in range(10_000)
            ]
            answer = client.post(f"{url}/batch", content=json.dumps(biggest).encode())
            assert answer.status_code == 200 and answer.json()["accepted"] == 10_000
        peak_mb = _peak_rss_kb(process.pid) / 1024
        assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"
    finally:
        process.terminate()
        process.wait(60)
