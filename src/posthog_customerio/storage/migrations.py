"""The schema of both backends, as plain data: one list of migration scripts each.

A database records how many scripts of its list it has run (SQLite: ``PRAGMA user_version``;
PostgreSQL: ``schema_migrations``) and runs the rest in order at start. Never edit or reorder an
entry: append a new one (to both lists when the change applies to both). ``tests/integration/test_storage.py``
checks that both lists end with the same tables and columns.
"""

from __future__ import annotations

__all__ = ["POSTGRES_MIGRATIONS", "POSTGRES_ONLY_TABLES", "SQLITE_MIGRATIONS"]

SQLITE_MIGRATIONS: list[str] = [
    # 1: person state, outbox, dead letters
    """
    CREATE TABLE IF NOT EXISTS persons (
        distinct_id TEXT PRIMARY KEY,
        identified INTEGER NOT NULL DEFAULT 0,
        email TEXT,
        created INTEGER NOT NULL DEFAULT 0,
        email_sent TEXT,
        digests TEXT NOT NULL DEFAULT '{}'
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        size INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        last_error TEXT
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT NOT NULL,
        status INTEGER,
        response TEXT,
        attempts INTEGER NOT NULL,
        enqueued_at REAL NOT NULL,
        failed_at REAL NOT NULL
    );
    """,
    # 2: the last status snapshot a running service wrote (read by `status`)
    """
    CREATE TABLE IF NOT EXISTS status_snapshot (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 3: identity merges and anonymous events: person aliases, extra state, multi-person ordering
    """
    ALTER TABLE persons ADD COLUMN merged_into TEXT;
    ALTER TABLE persons ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE outbox ADD COLUMN after_keys TEXT;
    ALTER TABLE dead_letters ADD COLUMN after_keys TEXT;
    """,
    # 4: delivery leases (used by the PostgreSQL backend; kept for one schema)
    """
    ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
    ALTER TABLE outbox ADD COLUMN lease_until REAL;
    """,
    # 5: find a visitor's queued anonymous events when they identify
    """
    CREATE INDEX IF NOT EXISTS outbox_person_key ON outbox (person_key);
    """,
    # 6: an operation's kind is data (person, anonymous, object); rows queued before it are
    # backfilled once from their payload, which then always began with its type
    """
    ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';
    ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';
    UPDATE outbox SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE outbox SET kind = 'object' WHERE payload LIKE '{"type":"object"%';
    UPDATE dead_letters SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE dead_letters SET kind = 'object' WHERE payload LIKE '{"type":"object"%';
    """,
    # 7: object and group keys start with U+001F instead of NUL (which PostgreSQL text cannot hold)
    """
    UPDATE persons SET distinct_id = char(31) || CAST(substr(CAST(distinct_id AS BLOB), 2) AS TEXT)
        WHERE substr(CAST(distinct_id AS BLOB), 1, 1) = x'00';
    UPDATE outbox SET person_key = char(31) || CAST(substr(CAST(person_key AS BLOB), 2) AS TEXT)
        WHERE substr(CAST(person_key AS BLOB), 1, 1) = x'00';
    UPDATE dead_letters SET person_key = char(31) || CAST(substr(CAST(person_key AS BLOB), 2) AS TEXT)
        WHERE substr(CAST(person_key AS BLOB), 1, 1) = x'00';
    UPDATE outbox SET after_keys = replace(after_keys, '\\u0000', '\\u001f') WHERE after_keys LIKE '%\\u0000%';
    UPDATE dead_letters SET after_keys = replace(after_keys, '\\u0000', '\\u001f') WHERE after_keys LIKE '%\\u0000%';
    """,
    # 8: the operator's view: each replica's counters with a heartbeat (``status`` sums them), the last
    # deliveries of each person (bounded), and people found by email or by whom they were merged into
    """
    CREATE TABLE IF NOT EXISTS replicas (
        replica TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        person_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        action TEXT,
        name TEXT,
        outcome TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS deliveries_person ON deliveries (person_key, id);
    CREATE INDEX IF NOT EXISTS persons_email ON persons (lower(email)) WHERE email IS NOT NULL;
    CREATE INDEX IF NOT EXISTS persons_merged_into ON persons (merged_into) WHERE merged_into IS NOT NULL;
    """,
    # 9: two lanes in queue order: person work (every kind but anonymous events) and anonymous events
    # (delivery claims person work first); leased rows found without a scan (PostgreSQL replicas)
    """
    CREATE INDEX IF NOT EXISTS outbox_person_lane ON outbox (seq) WHERE kind <> 'anonymous';
    CREATE INDEX IF NOT EXISTS outbox_anonymous_lane ON outbox (seq) WHERE kind = 'anonymous';
    CREATE INDEX IF NOT EXISTS outbox_leased ON outbox (seq) WHERE lease_until IS NOT NULL
    """,
    # 10: PostHog cohorts (sync-cohorts): each synced cohort's pass and progress, and the members each of its
    # targets (a manual segment, an attribute) last had, with the pass that last saw them
    """
    CREATE TABLE IF NOT EXISTS cohort_syncs (
        cohort_id TEXT PRIMARY KEY,
        pass INTEGER NOT NULL DEFAULT 0,
        phase TEXT NOT NULL DEFAULT 'idle',
        next_url TEXT,
        info TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cohort_members (
        cohort_id TEXT NOT NULL,
        target TEXT NOT NULL,
        person_id TEXT NOT NULL,
        distinct_id TEXT NOT NULL,
        pass INTEGER NOT NULL,
        PRIMARY KEY (cohort_id, target, person_id)
    );
    CREATE INDEX IF NOT EXISTS cohort_members_pass ON cohort_members (cohort_id, target, pass);
    """,
    # 11: event-time order (consume): an operation's event time, and how far each Kafka partition was stored
    # (the next offset to store, so a batch read again is not stored twice) and read (its newest event time; since
    # when it is read to its end)
    """
    ALTER TABLE outbox ADD COLUMN order_ts REAL;
    CREATE TABLE IF NOT EXISTS stream_positions (
        stream TEXT NOT NULL,
        part INTEGER NOT NULL,
        next_position INTEGER NOT NULL DEFAULT 0,
        event_ts REAL NOT NULL DEFAULT 0,
        end_at REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (stream, part)
    );
    """,
    # 12: Customer.io's message activity on its way to PostHog (activity.py): one row per reporting webhook, kept by
    # Customer.io's event_id (a retry is stored once); state queued, unplaced (its person is not known yet), dead or
    # captured (kept a while so a late retry is still recognised); leases for PostgreSQL replicas
    """
    CREATE TABLE IF NOT EXISTS activity_queue (
        event_id TEXT PRIMARY KEY,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        distinct_id TEXT,
        cio_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        received_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        settled_at REAL,
        lease_owner TEXT,
        lease_until REAL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS activity_queue_due ON activity_queue (state, next_attempt_at);
    CREATE INDEX IF NOT EXISTS activity_queue_cio_id ON activity_queue (cio_id) WHERE cio_id IS NOT NULL;
    """,
]

POSTGRES_MIGRATIONS: list[str] = [
    # 1: everything SQLite has after its migration 4
    """
    CREATE TABLE IF NOT EXISTS persons (
        distinct_id TEXT PRIMARY KEY,
        identified INTEGER NOT NULL DEFAULT 0,
        email TEXT,
        created INTEGER NOT NULL DEFAULT 0,
        email_sent TEXT,
        digests TEXT NOT NULL DEFAULT '{}',
        merged_into TEXT,
        extra TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE IF NOT EXISTS outbox (
        seq BIGSERIAL PRIMARY KEY,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        size INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at DOUBLE PRECISION NOT NULL,
        last_error TEXT,
        after_keys TEXT,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id BIGSERIAL PRIMARY KEY,
        seq BIGINT NOT NULL,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT NOT NULL,
        status INTEGER,
        response TEXT,
        attempts INTEGER NOT NULL,
        enqueued_at DOUBLE PRECISION NOT NULL,
        failed_at DOUBLE PRECISION NOT NULL,
        after_keys TEXT
    );
    CREATE TABLE IF NOT EXISTS status_snapshot (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )
    """,
    # 2: find a visitor's queued anonymous events when they identify
    """
    CREATE INDEX IF NOT EXISTS outbox_person_key ON outbox (person_key)
    """,
    # 3: request pacing shared by replicas: per workspace, the next request slot and the end of a pause
    # (epoch seconds on the database's clock; see pacing/postgres.py)
    """
    CREATE TABLE IF NOT EXISTS delivery_pacing (
        workspace TEXT PRIMARY KEY,
        next_slot DOUBLE PRECISION NOT NULL DEFAULT 0,
        hold_until DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
    # 4: an operation's kind is data (person, anonymous, object); rows queued before it are
    # backfilled once from their payload, which then always began with its type
    """
    ALTER TABLE outbox ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'person';
    ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'person';
    UPDATE outbox SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE outbox SET kind = 'object' WHERE payload LIKE '{"type":"object"%';
    UPDATE dead_letters SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE dead_letters SET kind = 'object' WHERE payload LIKE '{"type":"object"%'
    """,
    # 5: as SQLite's 8: replicas' counters, each person's last deliveries, people by email and by merge
    """
    CREATE TABLE IF NOT EXISTS replicas (
        replica TEXT PRIMARY KEY,
        started_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS deliveries (
        id BIGSERIAL PRIMARY KEY,
        person_key TEXT NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT NOT NULL,
        action TEXT,
        name TEXT,
        outcome TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS deliveries_person ON deliveries (person_key, id);
    CREATE INDEX IF NOT EXISTS persons_email ON persons (lower(email)) WHERE email IS NOT NULL;
    CREATE INDEX IF NOT EXISTS persons_merged_into ON persons (merged_into) WHERE merged_into IS NOT NULL
    """,
    # 6: as SQLite's 9: two lanes in queue order, person work and anonymous events
    # (delivery claims person work first); leased rows found without a scan (PostgreSQL replicas)
    """
    CREATE INDEX IF NOT EXISTS outbox_person_lane ON outbox (seq) WHERE kind <> 'anonymous';
    CREATE INDEX IF NOT EXISTS outbox_anonymous_lane ON outbox (seq) WHERE kind = 'anonymous';
    CREATE INDEX IF NOT EXISTS outbox_leased ON outbox (seq) WHERE lease_until IS NOT NULL
    """,
    # 7: as SQLite's 10: PostHog cohorts (sync-cohorts), their passes and the members each target last had
    """
    CREATE TABLE IF NOT EXISTS cohort_syncs (
        cohort_id TEXT PRIMARY KEY,
        pass BIGINT NOT NULL DEFAULT 0,
        phase TEXT NOT NULL DEFAULT 'idle',
        next_url TEXT,
        info TEXT NOT NULL DEFAULT '{}',
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cohort_members (
        cohort_id TEXT NOT NULL,
        target TEXT NOT NULL,
        person_id TEXT NOT NULL,
        distinct_id TEXT NOT NULL,
        pass BIGINT NOT NULL,
        PRIMARY KEY (cohort_id, target, person_id)
    );
    CREATE INDEX IF NOT EXISTS cohort_members_pass ON cohort_members (cohort_id, target, pass)
    """,
    # 8: the outbox and the delivery history are queues (every row inserted is deleted soon after): autovacuum
    # runs on them after 1,000 dead rows plus 1 % of the table (not PostgreSQL's default 20 %), so the space of
    # delivered operations is reused before the table grows past its largest backlog (docs/operations.md, Disk).
    # Storage parameters only: no column changes, and an operator may ALTER them later (this runs once)
    """
    ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
        toast.autovacuum_vacuum_scale_factor = 0.01, toast.autovacuum_vacuum_threshold = 1000);
    ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000)
    """,
    # 9: as SQLite's 11: event-time order (consume), and how far each Kafka partition was stored and read
    """
    ALTER TABLE outbox ADD COLUMN IF NOT EXISTS order_ts DOUBLE PRECISION;
    CREATE TABLE IF NOT EXISTS stream_positions (
        stream TEXT NOT NULL,
        part BIGINT NOT NULL,
        next_position BIGINT NOT NULL DEFAULT 0,
        event_ts DOUBLE PRECISION NOT NULL DEFAULT 0,
        end_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (stream, part)
    )
    """,
    # 10: as SQLite's 12: Customer.io's message activity on its way to PostHog
    """
    CREATE TABLE IF NOT EXISTS activity_queue (
        event_id TEXT PRIMARY KEY,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        distinct_id TEXT,
        cio_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        received_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        settled_at DOUBLE PRECISION,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS activity_queue_due ON activity_queue (state, next_attempt_at);
    CREATE INDEX IF NOT EXISTS activity_queue_cio_id ON activity_queue (cio_id) WHERE cio_id IS NOT NULL
    """,
]

#: tables only PostgreSQL has: request pacing shared by replicas (SQLite has one deliverer)
POSTGRES_ONLY_TABLES = frozenset({"delivery_pacing"})
