"""The sandbox's Customer.io Pipelines API: ``/v1/batch``, ``/v1/identify`` ... applied as Journeys does.

Mounted into the sandbox app by :func:`..server.create_app`; state lives in
:class:`PipelinesState` and is readable under ``/_sandbox/pipelines/`` (people, events, anonymous_events,
objects, failures, requests, stats; ``POST reset``; ``faults``: the Track API's fault rules (:mod:`.faults`),
``GET`` lists, ``POST`` adds, ``DELETE`` clears).

What it does, from Customer.io's documentation (https://docs.customer.io/integrations/api/cdp/) and the fields
the Customer.io (Journeys) destination reads from each call:

* Auth: Basic, the source key as username (password ignored; Customer.io's clients send it blank).
* ``X-Strict-Mode: 1``: invalid or over-limit requests get 400 ``{"code": ..., "message": ...}`` (the shape
  Customer.io's Python client parses) and a bad key 401. Without the header the API is documented as
  permissive, "logging errors but returning HTTP 200": the sandbox answers 200 and drops the request.
* Limits: 32 KB per call (read as 32,768 bytes, like Customer.io's clients), 500 KB (500,000 bytes) per request.
* A request is applied whole or not at all: Customer.io documents no per-call errors in strict mode.
* People and their identifiers. The ``userId`` is the person: "Person ID ... ``userId`` in request body; can be
  id or email" (https://docs.customer.io/integrations/api/track-vs-cdp-api/). An email-shaped ``userId``
  addresses the person by email and sets the email: "If you pass an email address as the ``userId``, Customer.io
  sets this trait for you" (``traits.email``, https://docs.customer.io/integrations/api/cdp/tag/default/identify/);
  any other addresses the person by ``id``. Without a ``userId``, an identify addresses the person by
  ``traits.email``: "when you use Customer.io as a destination, you can pass an empty userId or anonymousId, and
  identify people by their email trait" (same page). Email addresses are compared without case, ids with it:
  "id values are case sensitive; email addresses are not" (https://docs.customer.io/journeys/identifying-people/).
  A track/page/screen/group/alias to an unknown person creates the person.
* identify: traits are attributes; ``traits.email`` is the email identifier (a ``null``/``""`` email is ignored,
  as in the Track sandbox). With ``anonymousId`` too, the visitor's anonymous activity attaches to the person.
  The Journeys destination applies an identify as Customer.io's identify ("an incoming identify event from your
  sources adds or updates a person", https://docs.customer.io/cdp/destinations/connections/customerio/), so the
  Track API's identifier rules hold (https://docs.customer.io/integrations/api/track/ , identify; the Track
  sandbox's ``workspace/`` package cites them): identifiers are unique across people; an unknown ``id`` whose
  ``traits.email`` belongs to a person without an id gives that person the id ("If the identifier in the path
  does not belong to a person but you use an identifier in your request body that does belong to a person, your
  request updates the person and assigns them the identifier in the path"); the email of a person addressed by
  email does not change; the email of a person addressed by id changes -- the Pipelines way to change it: send
  an identify when people "Update their information—like when they change their email address"
  (https://docs.customer.io/integrations/data-in/source-spec/identify-spec/) -- while the workspace setting
  "Allow updates to email using ID" is on (``allow_email_update_by_id``, on by default as in the Track sandbox).
  An identify breaking these rules answers 200 and changes nothing: it is listed as an attribute update failure
  (``/_sandbox/pipelines/failures``), as Customer.io reports one in the workspace.
* A trait sent as ``null`` or ``""`` removes the attribute. The Pipelines API reference says only that traits
  are what "you want to set on a person. These can take any JSON shape"
  (https://docs.customer.io/integrations/api/cdp/tag/default/identify/ , from
  https://docs.customer.io/files/pipelines.json); an identify "adds or updates a person in our Customer.io
  Journeys destination" (https://docs.customer.io/cdp/destinations/connections/customerio/), which writes the
  traits as the person's attributes, and Customer.io's Track API removes an attribute passed as ``null`` or as
  an empty string (its reference, https://docs.customer.io/integrations/api/track/ , says so of object
  attributes, "Pass `null` or an empty string to remove an attribute", and of relationship attributes; the
  Track sandbox applies the same rule to people).
* Traits apply in arrival order: an older identify that arrives later overwrites a newer value. The Pipelines
  API documents ``timestamp`` only as "The ISO-8601 timestamp when the event originally took place. This is
  mostly useful when you backfill past events. If you're not backfilling data, you can leave this field empty
  and we'll use the current time or server time." (every call type in
  https://docs.customer.io/integrations/api/cdp/ , https://docs.customer.io/files/pipelines.json), and
  https://docs.customer.io/integrations/api/track-vs-cdp-api/ compares timestamps only by format; nothing
  documents that identify traits are ordered by it, as the Track API's ``_timestamp``/``timestamp`` is.
* track/page/screen: with ``userId`` the event belongs to the person (the ``anonymousId`` is ignored); with only
  ``anonymousId`` it is kept as anonymous activity until an identify (or alias) attaches it.
* group: the object ``(traits.objectTypeId | objectTypeId | "1", groupId)``; attributes are the traits without
  ``objectTypeId``/``relationshipAttributes``; a ``userId`` relates the person (with
  ``traits.relationshipAttributes``).
* alias: merges the person ``previousId`` into ``userId`` (or attaches the anonymous activity of ``previousId``).
* Semantic events (track with a reserved name) are actions, not events: Delete Person, User Suppressed /
  Unsuppressed, Device Created or Updated / Deleted (``context.device``, or ``properties.device``), Relationship
  Deleted, Object Deleted.
* ``messageId`` dedupe: Customer.io's client docs link ``common-fields/#messageid-deduplicate-calls``; the window
  is not stated in what we could read, so the sandbox remembers every ``messageId`` (also across person
  deletes) and applies a repeated one as a no-op.

The package: :mod:`.calls` (limits, validating a call), :mod:`.people` (people and their identifiers),
:mod:`.state` (:class:`PipelinesState`: the data and how each call applies), :mod:`.routes` (HTTP and the views).
"""

from __future__ import annotations

from .calls import MAX_CALL_BYTES, MAX_REQUEST_BYTES, PipelinesError, validate_call
from .routes import routes
from .state import PipelinesState

__all__ = ["MAX_CALL_BYTES", "MAX_REQUEST_BYTES", "PipelinesError", "PipelinesState", "routes", "validate_call"]
