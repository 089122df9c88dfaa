"""``check``: are the credentials good? Prints the region and the API URL."""

from __future__ import annotations

import contextlib

import httpx

from ..config import CUSTOMERIO, Settings
from ..output.base import AuthError
from ..output.track import TrackClient, resolve_track_url
from ..runtime import SANDBOX_CREDENTIALS
from .lifecycle import UNREACHABLE, exits
from .options import Sandbox, SettingFlags, setting_options
from .render import out


@setting_options(CUSTOMERIO, plugin_config=True)
def check(flags: SettingFlags, sandbox: Sandbox = False) -> None:
    """Verify the credentials; print the region and the Track API URL (with --api pipelines: the Pipelines key).

    Exit 0 when Customer.io accepts them, 1 when it does not (or is unreachable),
    2 for bad configuration.
    """
    with exits((AuthError, "{exc}"), UNREACHABLE):
        settings = flags.settings()
        if settings.pipelines:
            _check_pipelines(settings, sandbox)
            return
        with contextlib.ExitStack() as stack:
            if sandbox:
                from ..sandbox import SandboxServer

                site, key = SANDBOX_CREDENTIALS
                box = stack.enter_context(SandboxServer(port=0, site_id=site, api_key=key))
                url = box.url
            else:
                site, key = settings.credentials()
                url = resolve_track_url(
                    site,
                    key,
                    settings.customerio_region,
                    settings.customerio_track_url,
                    timeout=settings.customerio_timeout_s,
                )
            with TrackClient(site, key, url, timeout=settings.customerio_timeout_s) as client:
                answer = client.account_region()
    out.print(f"credentials OK\nregion     {answer.get('region', '?')}\ntrack URL  {url}", markup=False)


def _check_pipelines(settings: Settings, sandbox: bool) -> None:
    """``check`` with ``CUSTOMERIO_API=pipelines``: an empty strict-mode batch with the key (no Track call)."""
    from ..output.pipelines import PipelinesClient, resolve_pipelines_url
    from ..runtime import SANDBOX_PIPELINES_KEY

    unreachable = (httpx.HTTPError, "cannot reach the Customer.io Pipelines API: {exc}")
    with exits((AuthError, "{exc}"), unreachable), contextlib.ExitStack() as stack:
        if sandbox:
            from ..sandbox import SandboxServer

            box = stack.enter_context(SandboxServer(port=0, pipelines_key=SANDBOX_PIPELINES_KEY))
            key, url = SANDBOX_PIPELINES_KEY, box.url
        else:
            key = settings.pipelines_key()
            url = resolve_pipelines_url(settings.customerio_region, settings.customerio_pipelines_url)
        with PipelinesClient(key, url, timeout=settings.customerio_timeout_s) as client:
            client.check()
    region = "eu" if url == "https://cdp-eu.customer.io" else "us" if url == "https://cdp.customer.io" else "?"
    out.print(f"Pipelines API key OK\nregion         {region}\npipelines URL  {url}", markup=False)
