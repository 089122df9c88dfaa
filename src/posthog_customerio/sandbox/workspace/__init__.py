"""The sandbox's Customer.io workspace: people, identifiers, suppressions, events, anonymous events, objects,
relationships, manual segments, merges, delivery metrics and form submissions, in memory.

:class:`Workspace` (:mod:`.core`) applies validated :class:`~posthog_customerio.sandbox.operations.Op`
(from :mod:`..track_v1` / :mod:`..track_v2`) the way a Customer.io workspace does. The rules it reproduces
(Track API reference, https://docs.customer.io/integrations/api/track/ -- the OpenAPI operation named in
brackets; the rule is also cited where it is implemented):

* Suppress [suppress, .../track-customers/suppress/] deletes the profile and suppresses the path identifier
  and the person's id and email; "any future API calls or operations referencing the specified ID are
  ignored": answered 200, not applied (``/_sandbox/ignored``). Unsuppress [unsuppress] frees the id and
  email together and does not recreate the profile. See also
  https://docs.customer.io/journeys/deleting-users/.
* Identifiers are unique across profiles [identify, .../track-customers/identify/]: "If the identifier in
  the path and request body belong to different people, your request may return 200 OK but produce an
  Attribute Update Failure"; identifiers change only through ``cio_id`` (or the email by id when the
  workspace setting "Allow updates to email using ID" is on); an unknown ``cio_id`` drops the request; an
  unknown path identifier with a body identifier of an existing person updates that person and assigns
  the path identifier.
* ``_timestamp``/``timestamp`` is "when the attribute update occurred" and orders updates: an older write
  never overwrites a newer value (an untimestamped write is stamped with its receipt time).
* Merge [merge_customers]: a missing primary means "your request won't do anything" (200); the primary gets
  "attributes that are not set, or are empty, on the primary", the events and manual segments.
* Push metrics [pushMetrics, .../track-events/pushmetrics/], metrics [metrics] and v2 ``delivery``
  operations [delivery_operations, .../tag/track_v2/] are recorded.

Behaviour choices where Customer.io is vague:

* Deleting a person removes the person and their events; the dedupe memory of
  event ids is kept, so a replayed event id stays a duplicate.
* A repeated event ``id`` (case-insensitive) is a no-op: it creates nobody.
* ``id``/``email`` are identifiers, stored on the person, not in ``attributes``;
  ``null``/``""`` for them is ignored.
* Anonymous events attach on identify when they were received in the last 30
  days (a backfill of old events still attaches, as the real workspace does for
  events it received recently).
* Merge also moves devices, relationships and the email (when the primary has none).
* Manual segments exist once people are added (no App API here to create them); the
  sandbox sends no messages, so delivery metrics and ``/unsubscribe`` change no profile.

The package, one concern a module (every rule is cited where it is implemented):

* :mod:`.core` -- :class:`Workspace`: the parts behind one lock, the public reads and writes, the dispatch;
* :mod:`.people` -- profiles and their identifiers (:class:`~.people.Directory`), timestamped attributes;
* :mod:`.person_ops` -- identify, delete, suppress, unsuppress, merge, devices, relationships of a person;
* :mod:`.other_ops` -- events, anonymous events, deliveries, objects;
* :mod:`.events` -- people's and anonymous events, attaching, dedupe;
* :mod:`.objects` -- objects and relationships; :mod:`.segments` -- manual segments;
* :mod:`.suppressions` -- suppressed identifiers and ignored operations;
* :mod:`.records` -- attribute update failures, delivery metrics, form submissions.
"""

from __future__ import annotations

from .core import Workspace
from .events import ANONYMOUS_WINDOW_S
from .records import MAX_LOGGED_FAILURES, MAX_LOGGED_RECORDS

__all__ = ["ANONYMOUS_WINDOW_S", "MAX_LOGGED_FAILURES", "MAX_LOGGED_RECORDS", "Workspace"]
