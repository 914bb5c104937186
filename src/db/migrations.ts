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
];
