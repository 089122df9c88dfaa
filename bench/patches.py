"""What-if patches: the fixes proposed in RESULTS.md, applied by monkeypatching.

src/ is not changed. A benchmark run with ``BENCH_PATCHES=name,name`` (or ``all``)
starts ``posthog-customerio`` through bench/patched_cli.py, which applies these first,
so the "after" figures in RESULTS.md measure the proposed fixes on the same code.

* ``claim-scan`` -- ``outbox._select``: stop the candidate scan once the batch is
  full enough (byte budget under 4 KB left) or after 256 rows in a row that could not
  be claimed. Today a claim that has filled its byte budget to within one operation
  keeps reading (payloads included) up to ``scan_limit`` = 50,000 rows looking for a
  small enough one.
* ``depth`` -- ``Deliverer.wait_until_empty``: ``SELECT NOT EXISTS (SELECT 1 FROM
  outbox)`` instead of ``COUNT(*)`` (a full table scan) 20 times a second.
* ``mapping`` -- ``MappingConfig.keeps`` returns at once without property filters;
  ``value_digest`` and ``limits.json_len`` encode scalars without ``json.dumps``
  (the digests are byte-for-byte the same: checked below).
* ``group-commit`` -- the receiver's ingestions (one per HTTP request) are queued to
  one writer thread that commits whatever is waiting in one transaction, each request
  in its own SAVEPOINT (all or nothing per request, as today); each request is answered
  after the commit that holds it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(function: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = function
        return function
    return register


def apply(names: str) -> list[str]:
    chosen = list(PATCHES) if names.strip() == "all" else [n.strip() for n in names.split(",") if n.strip()]
    for name in chosen:
        PATCHES[name]()
    return chosen


def _already_fixed(name: str) -> None:
    import sys

    print(f"bench/patches.py: {name} is already in src/; not patched", file=sys.stderr)


@patch("claim-scan")
def _claim_scan() -> None:
    from posthog_customerio import outbox

    if hasattr(outbox, "_FRUITLESS_ROWS") or "payload" not in getattr(outbox, "_CANDIDATES_SQL", "payload"):
        return _already_fixed("claim-scan")  # the scan stops early / reads no payloads: patched for real
    Claimed = outbox.Claimed

    def _select(rows: Any, taken: Any, max_items: int, max_bytes: int, max_op_bytes: int) -> Any:
        claimed: list[Any] = []
        oversized: list[Any] = []
        blocked: set[str] = set()
        claimed_keys: set[str] = set()
        budget = max_bytes
        misses = 0
        for row in rows:
            if claimed and (misses >= 256 or budget < 4096):  # the only change: stop scanning
                break
            item = Claimed(*row[:7])
            keys = item.keys
            if taken(row) or any(key in blocked for key in keys) or (
                item.after_keys and any(key in claimed_keys for key in keys)
            ):
                blocked.update(keys)
                misses += 1
                continue
            if item.size > max_op_bytes:
                oversized.append(item)
                continue
            if item.size + 1 > budget or len(claimed) >= max_items:
                blocked.update(keys)
                misses += 1
                if len(claimed) >= max_items or budget < 64:
                    break
                continue
            misses = 0
            budget -= item.size + 1
            claimed.append(item)
            claimed_keys.update(keys)
        return claimed, oversized

    outbox._select = _select


@patch("depth")
def _depth() -> None:
    from posthog_customerio.customerio import AuthError
    from posthog_customerio.delivery import Deliverer
    from posthog_customerio.outbox import Outbox

    if hasattr(Outbox, "is_empty"):
        return _already_fixed("depth")

    def wait_until_empty(self: Any, timeout: float | None = None, tick: Callable[[], None] | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if tick is not None:
                tick()
            if self.auth_error and not self.pause_on_auth_error:
                raise AuthError(self.auth_error)
            if self.outbox.in_flight() == 0:
                with self.outbox.db.reading() as conn:
                    if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM outbox)").fetchone()[0]:
                        return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    Deliverer.wait_until_empty = wait_until_empty


def _scalar_json(value: Any, ensure_ascii: bool) -> str | None:
    """The JSON text json.dumps would produce for a scalar; None for anything else."""
    if isinstance(value, str):
        return (json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring)(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return None


@patch("mapping")
def _mapping() -> None:
    from posthog_customerio import limits, mapping

    original_keeps = mapping.MappingConfig.keeps

    def keeps(self: Any, key: str) -> bool:
        if not self.properties_to_include and not self.properties_to_exclude:
            return True
        return original_keeps(self, key)

    original_digest = mapping.value_digest

    def value_digest(value: Any) -> str:
        text = _scalar_json(value, ensure_ascii=True)
        if text is None:
            return original_digest(value)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    original_json_len = limits.json_len

    def json_len(value: Any) -> int:
        text = _scalar_json(value, ensure_ascii=False)
        return original_json_len(value) if text is None else len(text.encode())

    for sample in ("plain", "é\"\\\n\u2028", "", 0, -12, 10**30, 1.5, 1e300, True, False, None):
        assert value_digest(sample) == original_digest(sample), sample
        assert json_len(sample) == original_json_len(sample), sample
    mapping.MappingConfig.keeps = keeps
    mapping.value_digest = value_digest
    limits.json_len = json_len


@patch("group-commit")
def _group_commit() -> None:
    from posthog_customerio import db as dbmodule
    from posthog_customerio import pipeline

    local = threading.local()
    original_transaction = dbmodule.SqliteDatabase.transaction
    original_ingest = pipeline.Ingestor.ingest

    @contextlib.contextmanager
    def transaction(self: Any) -> Iterator[Any]:
        if getattr(local, "grouped", None) is self:  # inside the writer's group transaction
            yield self.conn
            return
        with original_transaction(self) as conn:
            yield conn

    class Writer:
        def __init__(self, ingestor: Any) -> None:
            self.ingestor = ingestor
            self.queue: queue.Queue[tuple[Any, str, concurrent.futures.Future[Any]]] = queue.Queue()
            threading.Thread(target=self.run, name="group-commit", daemon=True).start()

        def submit(self, events: Any, source: str) -> Any:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self.queue.put((events, source, future))
            return future.result()

        def run(self) -> None:
            while True:
                group = [self.queue.get()]
                while len(group) < 256:
                    try:
                        group.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
                db, outcomes = self.ingestor.db, []
                try:
                    with original_transaction(db) as conn:
                        local.grouped = db
                        try:
                            for events, source, future in group:
                                conn.execute("SAVEPOINT request")
                                try:
                                    report = original_ingest(self.ingestor, events, source)
                                except BaseException as exc:  # noqa: BLE001 - handed to the request
                                    conn.execute("ROLLBACK TO request")
                                    conn.execute("RELEASE request")
                                    outcomes.append((future, None, exc))
                                else:
                                    conn.execute("RELEASE request")
                                    outcomes.append((future, report, None))
                        finally:
                            local.grouped = None
                except BaseException as exc:  # noqa: BLE001 - the commit failed: every request fails
                    for _, _, future in group:
                        future.set_exception(exc)
                    continue
                for future, report, exc in outcomes:
                    if exc is None:
                        future.set_result(report)
                    else:
                        future.set_exception(exc)

    writers: dict[int, Writer] = {}
    writers_lock = threading.Lock()

    def ingest(self: Any, events: Any, source: str = "file") -> Any:
        if source == "file":  # send: one caller already batches 2,000 events per transaction
            return original_ingest(self, events, source)
        with writers_lock:
            writer = writers.get(id(self)) or writers.setdefault(id(self), Writer(self))
        return writer.submit(events, source)

    dbmodule.SqliteDatabase.transaction = transaction
    pipeline.Ingestor.ingest = ingest
