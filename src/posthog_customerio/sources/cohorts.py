"""PostHog cohorts -> Customer.io (``sync-cohorts``, and ``serve`` on a schedule): one pass reads each configured
cohort's members from PostHog's API and sends only what changed since the last pass.

**Targets.** ``COHORT_SEGMENTS`` (``7=12``) mirrors cohort 7 into manual segment 12; ``COHORT_ATTRIBUTES`` (``7``)
keeps it as a person attribute, ``COHORT_ATTRIBUTE_PREFIX`` + the slug of the cohort's name, named at the cohort's
first pass and kept (renaming the cohort in PostHog does not rename the attribute Customer.io segments use).

**A pass over one cohort** (each step one database transaction, so a pass stopped anywhere resumes without
sending anything twice):

1. ``GET /api/projects/{id}/cohorts/{cohort_id}/`` (https://posthog.com/docs/api/cohorts): a cohort that is
   deleted, missing (404) or unreadable (403, PostHog down) changes nothing and is reported.
2. Its members, page by page (``GET .../cohorts/{cohort_id}/persons/``, following ``next``; the persons reader's
   pacing, retries and origin check, :class:`~.posthog_api.PostHogPersonsClient`). For each page, in one
   transaction: members Customer.io does not know yet are created first (:func:`~..mapping.ensure_profile`, as
   ``sync-persons`` would); each member a target did not have is added (its operation enqueued, its row
   stored); members it had are marked as seen by this pass; the URL of the next page is saved. A pass that
   fails resumes at the saved page with the same pass number: members already stored are not added again.
3. When the last page is stored: the members a target has that this pass did not see have left: removed
   (a thousand per transaction) and forgotten. **Empty-cohort guard**: when the whole cohort read as empty
   while a target had members, nothing is removed and the cohort is reported ``suspicious_empty``
   (``--allow-empty`` removes them). **Changed while read**: PostHog pages members by offset, so a member
   leaving after the pass read a page moves the later ones up, and the member that opened the next page is
   listed by neither. Before removing anyone, the cohort is read again: when its ``count`` or
   ``last_calculation`` (which every change of its members sets) differ from the pass's start, nobody is removed
   by this pass (``removals_deferred``); the next pass, reading the cohort as it is, removes those that left.

The operations go through the outbox like every other (per-person order: a member's create goes out before
its add); the Track outputs send consecutive segment changes of one segment as one request of up to 1,000 ids.

Progress, membership and what the last pass did live in the database (``cohort_syncs``, ``cohort_members``),
so any replica (one at a time: :meth:`~..storage.Storage.cohort_sync_lock`) resumes another's pass, and
``status`` shows each cohort. :func:`plan_cohorts` is ``--dry-run``: the same reads, nothing stored or sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..ingestion import IngestReport
from ..mapping import CohortTarget, PersonSnapshot, ensure_profile, member_joined, member_left
from ..mapping.book import Book, Mapped
from ..mapping.cohorts import attribute_name
from ..mapping.persons import primary_distinct_id
from ..state import PersonState, load_states
from ..storage import Transaction
from ..storage.rows import CohortMemberRow, CohortSyncRow
from .base import UNBOUNDED, Room
from .persons import from_api
from .posthog_api import (
    PostHogApiError,
    PostHogAuthError,
    PostHogCohort,
    PostHogNotFound,
    PostHogPersonsClient,
)

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "OUTCOMES",
    "CohortPlan",
    "CohortReport",
    "CohortSyncer",
    "cohort_status",
    "configured_cohorts",
    "plan_cohorts",
]

log = logging.getLogger(__name__)

#: how a cohort's pass ended
OUTCOMES = ("ok", "suspicious_empty", "deleted", "not_found", "failed", "stopped")
#: PostHog's cohort persons list gives at most this many distinct_ids of a member (``distinct_id_limit=10``)
DISTINCT_ID_LIMIT = 10
#: members removed per transaction
REMOVE_CHUNK = 1000
#: an interrupted read older than this starts over instead of resuming: PostHog pages members by offset, and
#: the longer the gap the likelier the cohort was recalculated since (a new pass is always safe: members the
#: old one stored and the new one does not list are removed at its end, the others are not added again)
RESUME_WITHIN_S = 3600.0
#: examples a ``--dry-run`` lists per cohort
EXAMPLES = 5


class Stopped(Exception):
    """The pass was asked to stop (``serve`` shutting down): it ends after the page being stored."""


def configured_cohorts(settings: Settings) -> dict[str, list[CohortTarget]]:
    """Cohort id -> its targets, from ``COHORT_SEGMENTS`` and ``COHORT_ATTRIBUTES`` (attributes without a name
    yet: it comes from the cohort, at its first pass)."""
    cohorts: dict[str, list[CohortTarget]] = {}
    for cohort_id, segment_id in settings.cohort_segment_map.items():
        cohorts.setdefault(cohort_id, []).append(CohortTarget(cohort_id, segment_id=segment_id))
    for cohort_id in settings.cohort_attribute_ids:
        cohorts.setdefault(cohort_id, []).append(CohortTarget(cohort_id, attribute=""))
    return cohorts


@dataclass(slots=True)
class CohortReport:
    """What one pass did to one cohort (also kept in the database as the cohort's ``last_pass``)."""

    cohort_id: str
    name: str = ""
    outcome: str = "running"
    pass_no: int = 0
    #: this pass continued an interrupted one (from its saved page)
    resumed: bool = False
    #: members PostHog listed (this run's pages only when resumed)
    members_read: int = 0
    #: target description -> members it has now
    members: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    #: members Customer.io did not know, created before their add
    profiles_created: int = 0
    #: members that could not be added (no profile: anonymous, filtered), by reason
    skipped: dict[str, int] = field(default_factory=dict)
    #: members this pass did not list, left in place: the cohort changed while it was read (the next pass decides)
    removals_deferred: int = 0
    operations_enqueued: int = 0
    error: str | None = None
    started_at: float = 0.0
    ended_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly report."""
        return asdict(self)


@dataclass(slots=True)
class _Info:
    """The ``info`` JSON of a ``cohort_syncs`` row."""

    name: str = ""
    attribute: str | None = None
    targets: list[str] = field(default_factory=list)
    members_read: int = 0
    #: the cohort as this pass's read began (:func:`_version`): its members are removed only if it is still so
    read_of: list[Any] | None = None
    last_pass: dict[str, Any] | None = None
    last_ok_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    @classmethod
    def parse(cls, text: str) -> _Info:
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


class CohortSyncer:
    """Runs passes over the configured cohorts (see the module's docs). ``stop`` is polled between pages."""

    def __init__(
        self,
        runtime: Runtime,
        client: PostHogPersonsClient,
        *,
        allow_empty: bool = False,
        clock: Callable[[], float] = time.time,
        stop: Callable[[], bool] = lambda: False,
        on_page: Callable[[CohortReport], None] | None = None,
        room: Room = UNBOUNDED,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.allow_empty = allow_empty
        self.clock = clock
        self.stop = stop
        self.on_page = on_page
        #: the outbox's bound (``OUTBOX_MAX_QUEUED``): waited for before each page and each chunk of removals
        self.room = room
        self.cohorts = configured_cohorts(runtime.settings)

    # -- a pass --
    def run(self) -> list[CohortReport]:
        """One pass over every configured cohort, in id order. A refused key (401/403) ends the pass (raises
        :class:`~.posthog_api.PostHogAuthError`); other failures end only their cohort's pass (reported)."""
        reports = []
        for cohort_id in sorted(self.cohorts, key=int):
            report = self.sync_cohort(cohort_id)
            reports.append(report)
            if report.outcome == "stopped":
                break
        return reports

    def sync_cohort(self, cohort_id: str) -> CohortReport:
        """One pass over one cohort (resuming an interrupted one)."""
        report = CohortReport(cohort_id, started_at=self.clock())
        try:
            cohort = self.client.cohort(cohort_id)
            report.name = cohort.name
            if cohort.deleted:
                return self._unreadable(report, "deleted", f"cohort {cohort_id} is deleted in PostHog")
            self._read_and_apply(cohort, report)
        except Stopped:
            report.outcome, report.ended_at = "stopped", self.clock()
        except PostHogAuthError as exc:
            self._unreadable(report, "failed", str(exc))
            raise
        except PostHogNotFound as exc:
            return self._unreadable(report, "not_found", f"cohort {cohort_id} not found in PostHog ({exc})")
        except PostHogApiError as exc:
            return self._unreadable(report, "failed", str(exc))
        return report

    def _unreadable(self, report: CohortReport, outcome: str, error: str) -> CohortReport:
        """A cohort that cannot be read this pass: nothing changes in Customer.io; reported and kept in its row."""
        report.outcome, report.error, report.ended_at = outcome, error, self.clock()
        log.warning("cohort sync: cohort %s: %s (nothing changed in Customer.io)", report.cohort_id, error)
        with self.runtime.db.transaction() as conn:
            row = conn.cohort_sync(report.cohort_id) or _new_row(report.cohort_id, self.clock())
            info = _Info.parse(row.info)
            info.last_error, info.last_error_at = error, report.ended_at
            info.last_pass = report.as_dict()
            conn.save_cohort_sync(row._replace(info=info.text(), updated_at=self.clock()))
        return report

    def _targets(self, cohort: PostHogCohort, info: _Info) -> list[CohortTarget]:
        """The cohort's targets, its attribute named (once: the stored name is kept)."""
        targets = []
        for target in self.cohorts[cohort.id]:
            if target.attribute is not None:
                if not info.attribute:
                    info.attribute = attribute_name(
                        self.runtime.settings.cohort_attribute_prefix, cohort.id, cohort.name
                    )
                target = CohortTarget(cohort.id, attribute=info.attribute)
            targets.append(target)
        info.targets = [target.describe() for target in targets]
        return targets

    def _read_and_apply(self, cohort: PostHogCohort, report: CohortReport) -> None:
        with self.runtime.db.transaction() as conn:
            row = conn.cohort_sync(cohort.id) or _new_row(cohort.id, self.clock())
            info = _Info.parse(row.info)
            info.name = cohort.name
            targets = self._targets(cohort, info)
            stale = row.phase == "reading" and self.clock() - row.updated_at > RESUME_WITHIN_S
            if row.phase == "idle" or stale:  # a new pass (an old unfinished read starts over: see RESUME_WITHIN_S)
                row = row._replace(pass_no=row.pass_no + 1, phase="reading", next_url=None)
                info.members_read = 0
                info.read_of = _version(cohort)
            else:
                report.resumed = True
            conn.save_cohort_sync(row._replace(info=info.text(), updated_at=self.clock()))
        report.pass_no = row.pass_no
        if row.phase == "reading":
            start = row.next_url
            self._wait_for_room()
            for page in self.client.pages(start or self.client.cohort_members_url(cohort.id)):
                self._store_page(cohort.id, targets, row.pass_no, page.results, page.next_url, report)
                if self.on_page is not None:
                    self.on_page(report)
                if page.next_url is not None and self.stop():
                    raise Stopped
                if page.next_url is not None:
                    self._wait_for_room()
        self._remove_leavers(cohort.id, targets, row.pass_no, report)

    def _wait_for_room(self) -> None:
        """Wait while the outbox is at its bound; :class:`Stopped` when stopped or out of time (the pass resumes
        where it is: the page and the phase are saved)."""
        if not self.room.wait():
            raise Stopped

    def _store_page(
        self,
        cohort_id: str,
        targets: list[CohortTarget],
        pass_no: int,
        results: list[Any],
        next_url: str | None,
        report: CohortReport,
    ) -> None:
        """One page, in one transaction: create unknown members, add new ones, mark known ones seen, save where
        the pass is."""
        now = datetime.now(UTC)
        at = int(self.clock())
        snapshots = self._completed(cohort_id, targets, [from_api(person, now) for person in results], now)
        ingestor = self.runtime.ingestor

        def store(conn: Transaction) -> tuple[IngestReport, IngestReport, list[tuple[CohortTarget, CohortMemberRow]]]:
            row = conn.cohort_sync(cohort_id)
            assert row is not None
            joining: list[tuple[PersonSnapshot, CohortTarget]] = []
            for target in targets:
                stored = conn.cohort_members(cohort_id, target.key, [s.person_id for s in snapshots])
                seen = [
                    CohortMemberRow(s.person_id, stored[s.person_id].distinct_id, pass_no)
                    for s in snapshots
                    if s.person_id in stored
                ]
                conn.upsert_cohort_members(cohort_id, target.key, seen)
                joining += [(s, target) for s in snapshots if s.person_id not in stored]
            new_people = list({s.person_id: s for s, _ in joining}.values())
            created = ingestor.apply_in(conn, new_people, _distinct_ids, ensure_profile)
            placed: list[tuple[CohortTarget, CohortMemberRow]] = []

            def join(item: tuple[PersonSnapshot, CohortTarget], states: Any, config: Any) -> Any:
                snapshot, target = item
                mapped, distinct_id = member_joined(snapshot, target, states, config, at)
                if distinct_id is not None:
                    placed.append((target, CohortMemberRow(snapshot.person_id, distinct_id, pass_no)))
                return mapped

            joined = ingestor.apply_in(conn, joining, lambda item: _distinct_ids(item[0]), join)
            for target in targets:
                conn.upsert_cohort_members(cohort_id, target.key, [r for t, r in placed if t == target])
            info = _Info.parse(row.info)
            info.members_read += len(snapshots)
            phase = "reading" if next_url is not None else "removing"
            conn.save_cohort_sync(row._replace(phase=phase, next_url=next_url, info=info.text(), updated_at=at))
            return created, joined, placed

        # a transaction PostgreSQL aborts to break a deadlock runs again: the report is written once, after it
        created, joined, placed = self.runtime.db.transact(store)
        report.profiles_created += _created_count(created)
        self._count(report, created, skips=False)
        for target in targets:
            added = sum(1 for t, _ in placed if t == target)
            report.added[target.describe()] = report.added.get(target.describe(), 0) + added
        report.members_read += len(snapshots)
        self._count(report, joined)

    def _completed(
        self, cohort_id: str, targets: list[CohortTarget], snapshots: list[PersonSnapshot], now: datetime
    ) -> list[PersonSnapshot]:
        """The page's members, each once; a new member listed with :data:`DISTINCT_ID_LIMIT` distinct_ids (PostHog
        cuts the list there, oldest first) none of which leads to a profile is read again whole from the persons
        list, so it joins the profile its later ids (often its user id) have rather than a new one made of a
        device id. Done before the page's transaction: no PostHog request is made while the database is locked."""
        members = list({snapshot.person_id: snapshot for snapshot in snapshots}.values())
        cut = [s for s in members if len(s.distinct_ids) >= DISTINCT_ID_LIMIT]
        if not cut:
            return members
        with self.runtime.db.reading() as conn:
            stored = {pid for t in targets for pid in conn.cohort_members(cohort_id, t.key, [s.person_id for s in cut])}
            states = load_states(conn, [d for s in cut for d in s.distinct_ids])
        config = self.runtime.ingestor.config
        for index, snapshot in enumerate(members):
            if len(snapshot.distinct_ids) < DISTINCT_ID_LIMIT or snapshot.person_id in stored:
                continue
            if ensure_profile(snapshot, states, config).skipped == "has_profile":
                continue
            whole = self.client.person_by_distinct_id(snapshot.distinct_ids[0])
            if whole is not None and whole.uuid == snapshot.person_id:
                members[index] = from_api(whole, now)
        return members

    def _count(self, report: CohortReport, stored: IngestReport, skips: bool = True) -> None:
        report.operations_enqueued += stored.operations
        if skips:
            skipped = Counter(report.skipped)
            skipped.update(stored.skipped)
            report.skipped = dict(skipped)
        deliverer = self.runtime.current_deliverer
        if stored.operations and deliverer is not None:
            deliverer.notify()

    def _remove_leavers(self, cohort_id: str, targets: list[CohortTarget], pass_no: int, report: CohortReport) -> None:
        """The members this pass did not see leave their targets (unless the guard holds them), then the pass ends."""
        with self.runtime.db.reading() as conn:
            row = conn.cohort_sync(cohort_id)
            assert row is not None
            info = _Info.parse(row.info)
            before = {t.key: conn.count_cohort_members(cohort_id, t.key) for t in targets}
            unseen = sum(before[t.key] - conn.count_cohort_members(cohort_id, t.key, pass_no) for t in targets)
        held = info.members_read == 0 and any(before.values()) and not self.allow_empty
        if not held and unseen and self._changed_since_read(cohort_id, info):
            report.removals_deferred = unseen
            log.info(
                "cohort sync: cohort %s changed in PostHog while this pass read it: the %d members it did not list"
                " stay until a pass reads it unchanged",
                cohort_id,
                unseen,
            )
        elif not held:
            for target in targets:
                removed = 0
                while True:
                    self._wait_for_room()
                    stored, gone = self._remove_chunk(cohort_id, target, pass_no)
                    removed += gone
                    self._count(report, stored)
                    if gone < REMOVE_CHUNK:
                        break
                report.removed[target.describe()] = removed
        report.outcome = "suspicious_empty" if held else "ok"
        report.ended_at = self.clock()
        with self.runtime.db.transaction() as conn:
            row = conn.cohort_sync(cohort_id)
            assert row is not None
            info = _Info.parse(row.info)
            report.members = {t.describe(): conn.count_cohort_members(cohort_id, t.key) for t in targets}
            info.last_pass = report.as_dict()
            if held:
                info.last_error = (
                    f"cohort {cohort_id} read as empty while its targets had members: nothing removed"
                    " (run sync-cohorts --allow-empty if the cohort really is empty)"
                )
                info.last_error_at = report.ended_at
                report.error = info.last_error
                log.warning("cohort sync: %s", info.last_error)
            else:
                info.last_ok_at = report.ended_at
                info.last_error = None
            conn.save_cohort_sync(row._replace(phase="idle", next_url=None, info=info.text(), updated_at=self.clock()))

    def _changed_since_read(self, cohort_id: str, info: _Info) -> bool:
        """Whether the cohort (read again now) changed since this pass's read began: its pages may have shifted
        under the read, so a member it did not list may not have left."""
        now = self.client.cohort(cohort_id)
        return now.deleted or info.read_of is None or _version(now) != info.read_of

    def _remove_chunk(self, cohort_id: str, target: CohortTarget, pass_no: int) -> tuple[IngestReport, int]:
        """Up to :data:`REMOVE_CHUNK` members this pass did not see, in one transaction: each removed from the
        target and forgotten -- except one whose profile is still a member's (PostHog merged it into a person
        that is a member: its profile stays in)."""
        at = int(self.clock())

        def remove(conn: Transaction) -> tuple[IngestReport, list[CohortMemberRow]]:
            leaving = conn.stale_cohort_members(cohort_id, target.key, pass_no, REMOVE_CHUNK)
            kept = _still_members(conn, cohort_id, target.key, pass_no, leaving)
            stored = self.runtime.ingestor.apply_in(
                conn,
                [member for member in leaving if member.person_id not in kept],
                lambda member: [member.distinct_id],
                lambda member, states, config: member_left(member.distinct_id, target, states, config, at),
            )
            conn.delete_cohort_members(cohort_id, target.key, [member.person_id for member in leaving])
            return stored, leaving

        stored, leaving = self.runtime.db.transact(remove)
        stored.skipped.pop("no_profile", None)  # its profile is gone: nothing to remove, not a failure
        return stored, len(leaving)


def _profiles(conn: Transaction, distinct_ids: list[str]) -> dict[str, str]:
    """Each distinct_id's profile: the distinct_id it leads to, following merges."""
    book = Book(load_states(conn, distinct_ids), Mapped())
    return {distinct_id: book.person(distinct_id).distinct_id for distinct_id in distinct_ids}


def _still_members(
    conn: Transaction, cohort_id: str, target: str, pass_no: int, leaving: list[CohortMemberRow]
) -> set[str]:
    """The person ids of ``leaving`` whose profile is also the profile of a member this pass saw."""
    roots = _profiles(conn, [member.distinct_id for member in leaving])
    related, frontier = set(roots.values()), set(roots.values())
    for _ in range(8):  # the distinct_ids merged into those profiles (a merge chain is short)
        frontier = {row.distinct_id for row in conn.persons_merged_into(sorted(frontier))} - related
        if not frontier:
            break
        related |= frontier
    seen = conn.cohort_members_seen(cohort_id, target, pass_no, sorted(related))
    live = set(_profiles(conn, [member.distinct_id for member in seen]).values())
    return {member.person_id for member in leaving if roots[member.distinct_id] in live}


def _version(cohort: PostHogCohort) -> list[Any]:
    """What changes with a cohort's members in PostHog: a recalculation sets ``count`` and ``last_calculation``,
    a static cohort's insert both, its removal of a person ``count`` (a list: kept as JSON in ``_Info``)."""
    return [cohort.count, cohort.last_calculation]


def _new_row(cohort_id: str, now: float) -> CohortSyncRow:
    return CohortSyncRow(cohort_id, 0, "idle", None, "{}", now)


def _distinct_ids(snapshot: PersonSnapshot) -> list[str]:
    return list(snapshot.distinct_ids)


def _created_count(report: IngestReport) -> int:
    """Profiles :func:`~..mapping.ensure_profile` created: the people it mapped that were not skipped."""
    return report.events - sum(report.skipped.values())


# -- dry run ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class CohortPlan:
    """What a pass would do to one cohort (``--dry-run``)."""

    cohort_id: str
    name: str = ""
    outcome: str = "ok"
    members_read: int = 0
    #: target -> members that would be added / removed
    adds: dict[str, int] = field(default_factory=dict)
    removes: dict[str, int] = field(default_factory=dict)
    #: members Customer.io does not know yet (created first)
    profiles_to_create: int = 0
    examples: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly plan."""
        return asdict(self)


def plan_cohorts(runtime: Runtime, client: PostHogPersonsClient, *, allow_empty: bool = False) -> Iterator[CohortPlan]:
    """What a pass would change, cohort by cohort, from a full read of each (nothing stored, nothing sent)."""
    cohorts = configured_cohorts(runtime.settings)
    for cohort_id in sorted(cohorts, key=int):
        plan = CohortPlan(cohort_id)
        try:
            cohort = client.cohort(cohort_id)
            plan.name = cohort.name
            if cohort.deleted:
                plan.outcome, plan.error = "deleted", f"cohort {cohort_id} is deleted in PostHog"
            else:
                _plan(runtime, client, cohort, cohorts[cohort_id], plan, allow_empty)
        except PostHogNotFound as exc:
            plan.outcome, plan.error = "not_found", f"cohort {cohort_id} not found in PostHog ({exc})"
        except PostHogAuthError:
            raise
        except PostHogApiError as exc:
            plan.outcome, plan.error = "failed", str(exc)
        yield plan


def _plan(
    runtime: Runtime,
    client: PostHogPersonsClient,
    cohort: PostHogCohort,
    targets: list[CohortTarget],
    plan: CohortPlan,
    allow_empty: bool,
) -> None:
    members: dict[str, PersonSnapshot] = {}
    now = datetime.now(UTC)
    for page in client.pages(client.cohort_members_url(cohort.id)):
        for person in page.results:
            members[person.uuid] = from_api(person, now)
    plan.members_read = len(members)
    with runtime.db.reading() as conn:
        row = conn.cohort_sync(cohort.id)
        info = _Info.parse(row.info) if row is not None else _Info()
        attribute = info.attribute or attribute_name(runtime.settings.cohort_attribute_prefix, cohort.id, cohort.name)
        stored_by_target = {t.key: _all_members(conn, cohort.id, t.key) for t in targets}
        states = load_states(conn, [d for s in members.values() for d in s.distinct_ids])
    unknown, addable = set(), set()
    for snapshot in members.values():
        book_states = dict(states)
        ensured = ensure_profile(snapshot, book_states, runtime.ingestor.config)
        if ensured.operations:
            unknown.add(snapshot.person_id)
        if ensured.operations or ensured.skipped == "has_profile":  # else no profile: the pass skips it
            addable.add(snapshot.person_id)
    plan.profiles_to_create = len(unknown)
    held = not members and any(stored_by_target.values()) and not allow_empty
    for target in targets:
        name = (
            CohortTarget(cohort.id, attribute=attribute).describe()
            if target.attribute is not None
            else target.describe()
        )
        stored = stored_by_target[target.key]
        adds = [s for pid, s in members.items() if pid not in stored and pid in addable]
        plan.adds[name] = len(adds)
        plan.removes[name] = 0 if held else len(set(stored) - set(members))
        for snapshot in adds[: EXAMPLES - len(plan.examples)]:
            plan.examples.append(f"add {_addressed(snapshot, states)} to {name}")
    if held:
        plan.outcome = "suspicious_empty"
        plan.error = f"cohort {cohort.id} reads as empty while its targets have members: nothing would be removed"


def _addressed(snapshot: PersonSnapshot, states: dict[str, PersonState]) -> str:
    """The distinct_id a member's profile is (or would be) addressed by."""
    return primary_distinct_id(snapshot, Book(states, Mapped())) if snapshot.distinct_ids else snapshot.person_id


def _all_members(conn: Transaction, cohort_id: str, target: str) -> dict[str, CohortMemberRow]:
    return {row.person_id: row for row in conn.stale_cohort_members(cohort_id, target, 2**62, 2**31)}


# -- status -------------------------------------------------------------------------------------------------
def cohort_status(runtime: Runtime) -> list[dict[str, Any]]:
    """Each synced cohort as the database keeps it (any replica's passes): name, targets, members, last pass, error."""
    with runtime.db.reading() as conn:
        rows = conn.cohort_syncs()
        shown = []
        for row in rows:
            info = _Info.parse(row.info)
            shown.append(
                {
                    "cohort_id": row.cohort_id,
                    "name": info.name,
                    "targets": info.targets,
                    "attribute": info.attribute,
                    "pass": row.pass_no,
                    "phase": row.phase,
                    "last_pass": info.last_pass,
                    "last_ok_at": info.last_ok_at,
                    "last_error": info.last_error,
                    "last_error_at": info.last_error_at,
                }
            )
    return shown
