"""Every body encoding PostHog SDKs send, end to end through /e/ (split from ``tests/unit/test_decoding.py``)."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path
from urllib.parse import quote

import httpx
import lzstring
import pytest

from posthog_customerio.config import load_settings
from posthog_customerio.runtime import Runtime

from ..service import running_service
from ..unit.test_decoding import FORM, batch


@pytest.mark.e2e
def test_every_encoding_is_accepted_on_the_capture_paths(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "posthog_customerio_data_dir": tmp_path / "data",
            "sqlite_synchronous": "NORMAL",
            "shutdown_grace_s": 1,
            "max_body_bytes": 100_000,
        }
    )
    runtime = Runtime(settings, sandbox=True)
    body = batch("one", "two")
    lz = lzstring.LZString.compressToBase64(body.decode())
    with running_service(runtime) as url:
        cases = [
            ("/e/", {}, {"Content-Type": "text/plain"}, gzip.compress(body[:20]) + gzip.compress(body[20:])),
            ("/i/v0/e/", {"compression": "gzip-js"}, {}, gzip.compress(body)),
            ("/batch/", {}, FORM, b"data=" + quote(base64.b64encode(body).decode(), safe="").encode()),
            ("/e/", {"compression": "lz64"}, FORM, b"data=" + quote(lz, safe="").encode()),
        ]
        for path, query, headers, content in cases:
            answer = httpx.post(f"{url}{path}", params=query, headers=headers, content=content, timeout=10)
            assert answer.status_code == 200 and answer.json()["accepted"] == 2, (path, query, answer.text)
        bad = httpx.post(f"{url}/e/", content=gzip.compress(body) + b"junk", headers={"Content-Type": "text/plain"})
        assert bad.status_code == 400 and "trailing garbage" in bad.json()["error"]
        bomb = lzstring.LZString.compressToBase64("a" * 200_000)
        assert (
            httpx.post(
                f"{url}/e/", params={"compression": "lz64"}, headers=FORM, content=b"data=" + bomb.encode(), timeout=10
            ).status_code
            == 413
        )
