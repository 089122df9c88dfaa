"""Everything one sandbox holds, behind one object: the workspace, credentials, fault rules and the request log.

:class:`SandboxState` is what tests read (``sandbox.state.people()``, ``.requests()``, ``.stats()``) and
control (``.reset()``, ``.add_fault(...)``, ``.set_credentials(...)``); the routes use its parts directly.
"""

from __future__ import annotations

from typing import Any, cast

from starlette.requests import Request

from .credentials import Credentials
from .faults import FaultRules
from .requests_log import RequestLog
from .workspace import Workspace


class SandboxState:
    """The sandbox's state: :attr:`workspace`, :attr:`credentials`, :attr:`fault_rules`, :attr:`log` (thread-safe)."""

    def __init__(self, site_id: str = "sandbox", api_key: str = "sandbox") -> None:
        self.workspace = Workspace()
        self.credentials = Credentials(site_id, api_key)
        self.fault_rules = FaultRules()
        self.log = RequestLog()

    @property
    def allow_email_update_by_id(self) -> bool:
        """The workspace setting "Allow updates to email using ID" (on by default)."""
        return self.workspace.allow_email_update_by_id

    @allow_email_update_by_id.setter
    def allow_email_update_by_id(self, value: bool) -> None:
        self.workspace.allow_email_update_by_id = value

    # ----------------------------------------------------------------- reads

    def people(self) -> list[dict[str, Any]]:
        """Every person, in creation order."""
        return self.workspace.people()

    def person(self, identifier: str) -> dict[str, Any] | None:
        """One person by id, email (case-insensitive) or cio_id, with events; else ``None``."""
        return self.workspace.person(identifier)

    def events(self, person: str | None = None) -> list[dict[str, Any]]:
        """Events attributed to people (all, or one person's by identifier)."""
        return self.workspace.events(person)

    def anonymous_events(self) -> list[dict[str, Any]]:
        """Anonymous events not (yet) attached to a person."""
        return self.workspace.anonymous_events()

    def objects(self) -> list[dict[str, Any]]:
        """Objects with their relationships to people."""
        return self.workspace.objects()

    def suppressions(self) -> list[dict[str, Any]]:
        """Suppressed identifiers, one entry per suppression."""
        return self.workspace.suppressions()

    def ignored(self) -> list[dict[str, Any]]:
        """Operations accepted with 200 but ignored because they reference a suppressed identifier."""
        return self.workspace.ignored()

    def delivery_metrics(self) -> list[dict[str, Any]]:
        """Reported delivery metrics."""
        return self.workspace.delivery_metrics()

    def form_submissions(self) -> list[dict[str, Any]]:
        """Form submissions that identified a person."""
        return self.workspace.form_submissions()

    def segments(self) -> dict[str, list[str]]:
        """Manual segments: segment id -> member cio_ids."""
        return self.workspace.segments()

    def attribute_update_failures(self) -> list[dict[str, Any]]:
        """Identifies (and other ops) accepted with 200 but not applied."""
        return self.workspace.attribute_update_failures()

    def requests(self) -> list[dict[str, Any]]:
        """The request log (last 200,000 Track API requests), oldest first."""
        return self.log.entries()

    def faults(self) -> list[dict[str, Any]]:
        """Active fault rules, in application order."""
        return self.fault_rules.views()

    def stats(self) -> dict[str, Any]:
        """Counters: requests (total, by status), people, events, duplicates, ..., faults, internal errors."""
        requests, by_status, internal_errors = self.log.counts()
        return {
            "requests": requests,
            "requests_by_status": by_status,
            **self.workspace.stats(),
            "faults": len(self.fault_rules),
            "internal_errors": internal_errors,
        }

    # ----------------------------------------------------------------- control

    def reset(self) -> None:
        """Forget everything: data, request log, faults; restore the initial credentials."""
        self.workspace.reset()
        self.log.reset()
        self.fault_rules.clear()
        self.credentials.reset()

    def set_credentials(self, site_id: str, api_key: str) -> None:
        """Accept only these credentials from now on."""
        self.credentials.set(site_id, api_key)

    def add_fault(
        self,
        status: int | None = None,
        count: int | None = None,
        duration_s: float | None = None,
        retry_after: float | str | None = None,
        delay_s: float = 0.0,
        body: Any = None,
    ) -> dict[str, Any]:
        """Add a fault rule (next ``count`` requests, or all for ``duration_s``); raises ValueError."""
        return self.fault_rules.add(status, count, duration_s, retry_after, delay_s, body)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.fault_rules.clear()


def state_of(request: Request) -> SandboxState:
    """The :class:`SandboxState` of the app serving ``request``."""
    return cast(SandboxState, request.app.state.sandbox)
