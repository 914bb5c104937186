// Numbered, append-only schema migrations. Never edit a migration that has shipped:
// add a new one. Each runs in its own transaction and is recorded in schema_migrations.

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      -- The user directory: one row per tenant and external id.
      CREATE TABLE users (
        tenant         TEXT    NOT NULL,
        external_id    TEXT    NOT NULL,
        kind           TEXT    NOT NULL,
        email          TEXT,
        username       TEXT,
        first_name     TEXT,
        last_name      TEXT,
        role           TEXT,
        site_id        TEXT,
        site_label     TEXT,
        password_hash  TEXT,
        active         INTEGER NOT NULL DEFAULT 1,
        archived_at    TEXT,
        attributes     TEXT    NOT NULL DEFAULT '{}',
        created_at     TEXT    NOT NULL,
        updated_at     TEXT    NOT NULL,
        updated_by     TEXT,
        last_import_id INTEGER,
        PRIMARY KEY (tenant, external_id)
      ) WITHOUT ROWID;
      CREATE INDEX users_tenant_kind_active ON users (tenant, kind, active);

      -- One row per run of one tenant (scheduled, --now or triggered).
      CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        tenant      TEXT NOT NULL,
        reason      TEXT NOT NULL,            -- schedule | now | trigger
        owner       TEXT NOT NULL,            -- host:pid of the worker
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        status      TEXT NOT NULL DEFAULT 'running', -- running | ok | errors | failed | nothing | interrupted
        message     TEXT,
        dry_run     INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX runs_tenant ON runs (tenant, id);

      -- One row per processed file of one epoch.
      CREATE TABLE imports (
        id           INTEGER PRIMARY KEY,
        run_id       INTEGER REFERENCES runs(id),
        tenant       TEXT NOT NULL,
        epoch        TEXT NOT NULL,
        file         TEXT NOT NULL,
        kind         TEXT,
        status       TEXT NOT NULL,   -- applied | applied with errors | rejected | held | failed
        message      TEXT,            -- file-level problem, in plain words
        content_sha1 TEXT,
        rows         INTEGER NOT NULL DEFAULT 0,
        created      INTEGER NOT NULL DEFAULT 0,
        updated      INTEGER NOT NULL DEFAULT 0,
        unchanged    INTEGER NOT NULL DEFAULT 0,
        deactivated  INTEGER NOT NULL DEFAULT 0,
        archived     INTEGER NOT NULL DEFAULT 0,
        failed       INTEGER NOT NULL DEFAULT 0,
        actor        TEXT,
        started_at   TEXT NOT NULL,
        finished_at  TEXT NOT NULL
      );
      CREATE INDEX imports_tenant ON imports (tenant, id);
      -- A file of an epoch is applied at most once: the guard against double application.
      CREATE UNIQUE INDEX imports_applied_once ON imports (tenant, epoch, file)
        WHERE status IN ('applied', 'applied with errors');

      -- Row-level problems of one import.
      CREATE TABLE import_errors (
        import_id INTEGER NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
        line      INTEGER NOT NULL,
        column    TEXT,
        value     TEXT,
        reason    TEXT NOT NULL
      );
      CREATE INDEX import_errors_import ON import_errors (import_id);

      -- Who changed which user, when, and which fields (old values of non-secret fields).
      CREATE TABLE user_changes (
        id          INTEGER PRIMARY KEY,
        import_id   INTEGER REFERENCES imports(id),
        tenant      TEXT NOT NULL,
        external_id TEXT NOT NULL,
        action      TEXT NOT NULL,   -- create | update | deactivate | archive | restore
        fields      TEXT NOT NULL,   -- JSON array of changed field names
        old_values  TEXT NOT NULL,   -- JSON object: field -> previous value (secrets left out)
        actor       TEXT,
        changed_at  TEXT NOT NULL
      );
      CREATE INDEX user_changes_user ON user_changes (tenant, external_id, id);

      -- Epochs claimed on an SFTP host (renamed into .processing); the lease lets a
      -- later run recover a claim left by a worker that died.
      CREATE TABLE claims (
        tenant      TEXT NOT NULL,
        epoch       TEXT NOT NULL,
        owner       TEXT NOT NULL,
        claimed_at  TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        PRIMARY KEY (tenant, epoch)
      );

      -- One worker per tenant at a time, across processes on this machine.
      CREATE TABLE tenant_locks (
        tenant      TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at  TEXT NOT NULL
      );

      -- Content hashes of keep-in-place files already processed.
      CREATE TABLE content_hashes (
        tenant    TEXT NOT NULL,
        path      TEXT NOT NULL,
        sha1      TEXT NOT NULL,
        import_id INTEGER,
        seen_at   TEXT NOT NULL,
        PRIMARY KEY (tenant, path, sha1)
      );

      -- Loose files seen on the SFTP host: a file is settled once its size and mtime have
      -- stayed the same for settleSeconds by our clock (mtime alone lies: \`put -p\` keeps it).
      CREATE TABLE file_observations (
        tenant     TEXT NOT NULL,
        path       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        mtime      INTEGER NOT NULL,
        first_seen TEXT NOT NULL,
        PRIMARY KEY (tenant, path)
      );

      -- Uploads that never completed (epoch without COMPLETE), reported once.
      CREATE TABLE stale_uploads (
        tenant      TEXT NOT NULL,
        epoch       TEXT NOT NULL,
        first_seen  TEXT NOT NULL,
        reported_at TEXT,
        resolved_at TEXT,
        PRIMARY KEY (tenant, epoch)
      );

      -- Outgoing mail: queued in the transaction that records the import, sent later.
      CREATE TABLE mail_queue (
        id              INTEGER PRIMARY KEY,
        tenant          TEXT NOT NULL,
        dedupe_key      TEXT NOT NULL UNIQUE, -- e.g. report:<tenant>:<epoch>
        mail_from       TEXT NOT NULL,
        mail_to         TEXT NOT NULL,        -- JSON array
        reply_to        TEXT,
        subject         TEXT NOT NULL,
        text            TEXT NOT NULL,
        html            TEXT NOT NULL,
        attachments     TEXT NOT NULL DEFAULT '[]', -- JSON [{filename, contentType, content(base64)}]
        status          TEXT NOT NULL DEFAULT 'queued', -- queued | sent
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error      TEXT,
        created_at      TEXT NOT NULL,
        sent_at         TEXT,
        message_id      TEXT
      );
      CREATE INDEX mail_queue_due ON mail_queue (status, next_attempt_at);

      -- Tier-2 requests for an immediate run, picked up by the running daemon.
      CREATE TABLE triggers (
        id           INTEGER PRIMARY KEY,
        tenant       TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        requested_by TEXT,
        picked_up_at TEXT,
        run_id       INTEGER
      );
      CREATE INDEX triggers_pending ON triggers (picked_up_at, tenant);
    `,
  },
  {
    version: 2,
    name: 'daemon heartbeats and trigger outcomes',
    sql: `
      -- Running daemons, so \`trigger\` and \`status\` can tell whether anyone will act on a
      -- request. A daemon is live while its heartbeat is fresh and it has not stopped.
      CREATE TABLE daemons (
        owner        TEXT PRIMARY KEY,       -- host:pid
        started_at   TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        stopped_at   TEXT,
        tenants      TEXT NOT NULL DEFAULT '[]' -- JSON array of the tenant ids it serves
      );

      -- What became of a trigger: the daemon that took it and the result of its run, so
      -- \`trigger --wait\` can report it and a trigger taken by a daemon that died is retaken.
      ALTER TABLE triggers ADD COLUMN picked_up_by TEXT;
      ALTER TABLE triggers ADD COLUMN finished_at TEXT;
      ALTER TABLE triggers ADD COLUMN status TEXT;  -- the run's status: ok | errors | failed | nothing | busy
      ALTER TABLE triggers ADD COLUMN message TEXT;
    `,
  },
  {
    version: 3,
    name: 'applied-once guard includes the content',
    sql: `
      -- A district may reuse an epoch name for a new upload; only the same content under the
      -- same epoch and file name is "applied before".
      DROP INDEX imports_applied_once;
      CREATE UNIQUE INDEX imports_applied_once ON imports (tenant, epoch, file, content_sha1)
        WHERE status IN ('applied', 'applied with errors');
    `,
  },
  {
    version: 4,
    name: 'outbox, set-aside uploads, password digests, cluster ticks, audit',
    sql: `
      -- Set-based applies: a keyed digest tells an unchanged password without scrypt, and a
      -- create is recorded once per import (created_import_id + imports.created_fields) rather
      -- than once per user. The (tenant, kind, active) index cost a fifth of a bulk load; the
      -- primary key's tenant prefix serves the same scans.
      ALTER TABLE users ADD COLUMN password_digest TEXT;
      ALTER TABLE users ADD COLUMN created_import_id INTEGER;
      DROP INDEX users_tenant_kind_active;

      ALTER TABLE imports ADD COLUMN header TEXT;          -- JSON array: the header cells as uploaded
      ALTER TABLE imports ADD COLUMN created_fields TEXT;  -- JSON array: fields the created users got
      ALTER TABLE imports ADD COLUMN held_import_id INTEGER; -- release/discard/superseded: the held import
      ALTER TABLE imports ADD COLUMN reverts_import_id INTEGER; -- an undo: the import it undid
      CREATE INDEX imports_run ON imports (run_id);
      CREATE INDEX imports_epoch ON imports (tenant, epoch);

      -- Undo restores a user's previous password hash (never a password): kept apart from
      -- old_values, which the history shows.
      ALTER TABLE user_changes ADD COLUMN old_password_hash TEXT;
      ALTER TABLE user_changes ADD COLUMN old_password_digest TEXT;
      CREATE INDEX user_changes_import ON user_changes (import_id);

      -- errors.csv is rebuilt from here (a crash may lose the local copy).
      ALTER TABLE import_errors ADD COLUMN raw TEXT;       -- JSON array: the row's cells, secrets blanked

      -- The outbox: what to tell a district, stored in the transaction that decides it; the mail
      -- is rendered and queued from it afterwards. An epoch's outcome is stored before its upload
      -- is moved (filed = 0) and confirmed once the upload is where the report will say it is.
      CREATE TABLE outcomes (
        id          INTEGER PRIMARY KEY,
        tenant      TEXT NOT NULL,
        kind        TEXT NOT NULL,      -- epoch | released | discarded | stale | overdue
        dedupe_key  TEXT NOT NULL UNIQUE,
        epoch       TEXT,
        payload     TEXT NOT NULL,      -- JSON
        filed       INTEGER NOT NULL DEFAULT 1,
        created_at  TEXT NOT NULL,
        reported_at TEXT
      );
      CREATE INDEX outcomes_unreported ON outcomes (tenant, id) WHERE reported_at IS NULL;
      CREATE INDEX outcomes_epoch ON outcomes (tenant, epoch);

      -- What the worker will not take again (a failed epoch it could not move, a symlink, a name it
      -- cannot handle) until its signature (size, mtime, listing) changes.
      CREATE TABLE set_aside (
        tenant    TEXT NOT NULL,
        path      TEXT NOT NULL,
        signature TEXT NOT NULL,
        reason    TEXT NOT NULL,
        at        TEXT NOT NULL,
        PRIMARY KEY (tenant, path)
      );

      -- One row per scheduled tick that ran: with several daemons, exactly one runs each tick.
      CREATE TABLE schedule_ticks (
        tenant     TEXT NOT NULL,
        due_at     TEXT NOT NULL,
        owner      TEXT NOT NULL,
        claimed_at TEXT NOT NULL,
        PRIMARY KEY (tenant, due_at)
      );

      -- Who did what by hand (release, discard, revert, run now, resend), and what came of it.
      CREATE TABLE audit (
        id     INTEGER PRIMARY KEY,
        at     TEXT NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        tenant TEXT,
        target TEXT,
        result TEXT NOT NULL,
        detail TEXT
      );
      CREATE INDEX audit_tenant ON audit (tenant, id);

      -- Loose files a run saw but did not take yet, and when it will (JSON), for status and trigger.
      ALTER TABLE runs ADD COLUMN settling TEXT;

      ALTER TABLE daemons ADD COLUMN host TEXT;
      ALTER TABLE daemons ADD COLUMN pid INTEGER;
      ALTER TABLE daemons ADD COLUMN running TEXT NOT NULL DEFAULT '[]';
    `,
  },
  {
    version: 5,
    name: 'console sessions',
    sql: `
      -- Signed-in users of the console, shared by every daemon. Only a SHA-256 of the cookie is kept.
      CREATE TABLE console_sessions (
        id_hash    TEXT PRIMARY KEY,
        username   TEXT NOT NULL,
        role       TEXT NOT NULL,  -- viewer | operator, as configured when they signed in
        csrf       TEXT NOT NULL,  -- the token every form of the session carries
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
      );
      CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
    `,
  },
];
