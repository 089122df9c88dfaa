"""``sandbox``: the local Customer.io-compatible Track API, on its own."""

from __future__ import annotations

from typing import Annotated

import typer

from .lifecycle import check_port
from .render import err


def sandbox_command(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Interface to bind")] = "127.0.0.1",
    site_id: Annotated[str, typer.Option("--site-id", help="Accepted site ID")] = "sandbox",
    api_key: Annotated[str, typer.Option("--api-key", help="Accepted API key")] = "sandbox",
    region: Annotated[str, typer.Option("--region", help="Region it reports")] = "us",
) -> None:
    """Run the local Customer.io-compatible Track API (people and events kept in memory)."""
    check_port(port)
    from ..sandbox import serve

    err.print(
        f"sandbox Track API on http://{host}:{port} (site ID {site_id!r}, API key {api_key!r});"
        f" see http://{host}:{port}/_sandbox/people",
        markup=False,
    )
    serve(host=host, port=port, site_id=site_id, api_key=api_key, region=region)
