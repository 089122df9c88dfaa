"""The unit tier stays in-process: a test here that opens a network socket or starts a process fails."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a unit test {what}: it belongs in tests/integration or tests/e2e (docs/development.md)")

    return refuse


@pytest.fixture(autouse=True)
def _in_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect, real_bind = socket.socket.connect, socket.socket.bind

    def inet_only(real: Any, what: str) -> Any:
        def call(self: socket.socket, address: Any, *args: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                _refuse(f"opened a network socket ({what} {address!r})")()
            return real(self, address, *args)

        return call

    monkeypatch.setattr(socket.socket, "connect", inet_only(real_connect, "connect"))
    monkeypatch.setattr(socket.socket, "bind", inet_only(real_bind, "bind"))
    monkeypatch.setattr(socket, "create_connection", _refuse("opened a network connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("started a process"))
