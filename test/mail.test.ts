// The report mail end to end: outcomes stored in a real SQLite file, turned into reports from
// the shipped templates (errors.csv rebuilt from the database), queued, delivered to a real
// SMTP server (or written to the outbox), parsed back.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import PostalMime from 'postal-mime';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS, type Config, type TenantConfig } from '../src/config.js';
import { importFile } from '../src/import/import-file.js';
import { KindRegistry } from '../src/import/kinds.js';
import { silentLogger } from '../src/log.js';
import { backoffMs, deliverQueuedMail, emlName, PERMANENT_TRIES } from '../src/mail/delivery.js';
import { renderReport, shouldNotify, type EpochReport, type FileReport } from '../src/mail/report.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import type { NewMail, OutcomePayload } from '../src/store/types.js';
import { reportOutcomes } from '../src/worker/reporting.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';

const EPOCH = '20240101-020000';

let dir: string;
let store: SqliteStore;
let smtp: TestSmtpServer | undefined;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-mail-'));
  store = new SqliteStore(path.join(dir, 'provisioner.db'));
  await store.schema.migrate();
});

afterEach(async () => {
  await store.close();
  await smtp?.stop();
  smtp = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

function makeConfig(smtpUrl?: string, tenants: TenantConfig[] = [makeTenant()]): Config {
  return {
    source: '<test>',
    database: path.join(dir, 'provisioner.db'),
    workDir: path.join(dir, 'work'),
    concurrency: 1,
    discoveryConcurrency: 1,
    leaseSeconds: 60,
    settleRecheckSeconds: 0,
    limits: { maxRecordBytes: 1 << 20, parseThreads: null },
    passwordDigest: {},
    log: { level: 'silent', format: 'json' },
    mail: {
      from: 'Account Provisioning <provisioning@vendor.example>',
      smtp: smtpUrl,
      outbox: path.join(dir, 'outbox'),
      operators: ['ops@vendor.example'],
      timeoutSeconds: 5,
    },
    tenants,
  };
}

function makeTenant(notify: Partial<TenantConfig['notify']> = {}, id = 'lincoln-usd', name = 'Lincoln Unified School District'): TenantConfig {
  return {
    id,
    name,
    enabled: true,
    schedule: '*/5 * * * *',
    timezone: 'UTC',
    settleSeconds: 60,
    staleAfterHours: 24,
    sftp: { host: '127.0.0.1', port: 22, username: 'lincoln', password: 'x', hostKey: 'SHA256:x', timeoutSeconds: 5 },
    paths: { upload: '/upload', bak: '/upload/bak', tmp: '/tmp', failed: '/upload/failed' },
    files: { 'users.csv': 'samegoal-users' },
    loose: 'auto',
    encoding: 'utf-8',
    options: { ...DEFAULT_OPTIONS, siteMap: {} },
    notify: { to: ['it@lincoln.example'], replyTo: 'support@vendor.example', when: 'failures', ...notify },
  };
}

function fileReport(over: Partial<FileReport> = {}): FileReport {
  return {
    file: 'users.csv',
    kind: 'samegoal-users',
    status: 'applied with errors',
    message: null,
    counts: { rows: 120, created: 100, updated: 10, unchanged: 7, deactivated: 0, archived: 0, failed: 3 },
    sampleErrors: [
      'line 4: email "x": is not a valid e-mail address',
      'line 9: user_id: is required',
      'line 17: role "wizard": must be one of student, teacher, admin',
    ],
    errorsCsvName: 'errors.csv',
    ...over,
  };
}

function epochReport(over: Partial<EpochReport> = {}): EpochReport {
  const files = over.files ?? [fileReport()];
  return {
    tenantId: 'lincoln-usd',
    tenantName: 'Lincoln Unified School District',
    epoch: EPOCH,
    status: files[0]?.status ?? 'applied',
    files,
    staleUploads: [],
    dryRun: false,
    finishedAt: '2024-01-01T02:00:12.000Z',
    bakPath: `/upload/bak/${EPOCH}`,
    ...over,
  };
}

// Bytes a careless transfer encoding would change: CRLF, a bare LF, non-ASCII, '=' and a long line.
const ERRORS_CSV = Buffer.from(
  'user_id,first_name,last_name,email,error\r\n' +
    '17,Zoë,O\'Brien,x,"line 4: email ""x"": is not a valid e-mail address"\r\n' +
    `18,=cmd,Ünal,${'a'.repeat(200)}@example.org,"line 9: a=b; multi\nline"\r\n`,
  'utf8',
);

/** A rendered report, queued as the outbox queues it. */
function rendered(report = epochReport(), key = `outcome:${report.epoch}:${report.tenantId}`, to = ['it@lincoln.example']): NewMail {
  const mail = renderReport(report);
  return {
    tenant: report.tenantId, dedupeKey: key, from: 'Account Provisioning <provisioning@vendor.example>', to, replyTo: 'support@vendor.example',
    subject: mail.subject, text: mail.text, html: mail.html,
    attachments: [{ filename: 'errors.csv', contentType: 'text/csv', content: ERRORS_CSV.toString('base64') }],
  };
}

const get = async (id: number) => (await store.mail.get(id))!;
const later = (seconds: number) => new Date(Date.now() + seconds * 1000);
const address = (a: unknown) => (a as { address?: string } | undefined)?.address;

describe('report mail over SMTP', () => {
  it('delivers a queued report once, with the right headers and errors.csv byte for byte', async () => {
    smtp = await startTestSmtpServer();
    const config = makeConfig(smtp.url);
    const id = await store.mail.enqueue(rendered());

    const result = await deliverQueuedMail(store, config);
    expect(result).toEqual({ sent: 1, failed: 0, pending: 0 });
    expect(smtp.messages).toHaveLength(1);
    const received = smtp.messages[0];
    expect(received.from).toBe('provisioning@vendor.example');
    expect(received.to).toEqual(['it@lincoln.example']);

    const mail = await PostalMime.parse(received.raw, { attachmentEncoding: 'arraybuffer' });
    expect(address(mail.from)).toBe('provisioning@vendor.example');
    expect(mail.to?.map(address)).toEqual(['it@lincoln.example']);
    expect(mail.replyTo?.map(address)).toEqual(['support@vendor.example']);
    expect(mail.subject).toBe(`[provisioner] Lincoln Unified School District: users.csv applied with 3 errors (${EPOCH})`);
    expect(mail.text).toContain('3 of 120 rows could not be applied; fix them in the attached errors.csv and upload it again as users.csv.');
    expect(mail.text).toContain('line 4: email "x": is not a valid e-mail address');
    expect(mail.text).toContain(`/upload/bak/${EPOCH}`);
    expect(mail.html).toContain('Lincoln Unified School District');
    expect(mail.attachments).toHaveLength(1);
    const att = mail.attachments[0];
    expect(att.filename).toBe('errors.csv');
    expect(att.mimeType).toBe('text/csv');
    expect(Buffer.from(att.content as ArrayBuffer).equals(ERRORS_CSV)).toBe(true);

    const row = await get(id);
    expect(row).toMatchObject({ id, status: 'sent', attempts: 1, lastError: null });
    expect(row.sentAt).not.toBeNull();
    expect(row.messageId).toBe(mail.messageId);

    expect(await deliverQueuedMail(store, config, { now: later(7200) })).toEqual({ sent: 0, failed: 0, pending: 0 });
    expect(smtp.messages).toHaveLength(1);
  });

  it('keeps the message queued through an outage (4xx answers) and delivers it exactly once after the back-off', async () => {
    smtp = await startTestSmtpServer();
    const config = makeConfig(smtp.url);
    const id = await store.mail.enqueue(rendered());
    smtp.rejectNext(2);

    const t0 = new Date();
    expect(await deliverQueuedMail(store, config, { now: t0 })).toEqual({ sent: 0, failed: 1, pending: 1 });
    let row = await get(id);
    expect(row).toMatchObject({ status: 'queued', attempts: 1 });
    expect(row.lastError).toMatch(/451/);
    expect(row.nextAttemptAt).toBe(new Date(t0.getTime() + 30_000).toISOString());
    expect(await store.mail.summary()).toMatchObject({ queued: 1, sent: 0, lastError: row.lastError });

    // Not due yet: nothing is tried.
    expect(await deliverQueuedMail(store, config, { now: new Date(t0.getTime() + 10_000) })).toEqual({ sent: 0, failed: 0, pending: 1 });

    const t1 = new Date(t0.getTime() + 31_000);
    expect(await deliverQueuedMail(store, config, { now: t1 })).toEqual({ sent: 0, failed: 1, pending: 1 });
    row = await get(id);
    expect(row.attempts).toBe(2);
    expect(row.nextAttemptAt).toBe(new Date(t1.getTime() + 60_000).toISOString());

    const t2 = new Date(t1.getTime() + 61_000);
    expect(await deliverQueuedMail(store, config, { now: t2 })).toEqual({ sent: 1, failed: 0, pending: 0 });
    expect(await deliverQueuedMail(store, config, { now: new Date(t2.getTime() + 86_400_000) })).toEqual({ sent: 0, failed: 0, pending: 0 });
    expect(smtp.messages).toHaveLength(1);
    expect(await get(id)).toMatchObject({ status: 'sent', attempts: 3 });
    expect(await store.mail.summary()).toEqual({ queued: 0, sent: 1, failed: 0, oldestQueuedAt: null, lastError: null });
  });

  it('gives up on a message the server refuses for good (5xx) after a bounded number of tries, and says so', async () => {
    smtp = await startTestSmtpServer();
    const config = makeConfig(smtp.url);
    const id = await store.mail.enqueue(rendered());
    smtp.rejectNext(100, 550);
    let now = new Date();
    for (let i = 0; i < PERMANENT_TRIES + 2; i++) {
      await deliverQueuedMail(store, config, { now });
      now = new Date(now.getTime() + 2 * 3600_000);
    }
    const row = await get(id);
    expect(row).toMatchObject({ status: 'failed', attempts: PERMANENT_TRIES });
    expect(row.lastError).toMatch(/550/);
    expect(await store.mail.summary()).toMatchObject({ queued: 0, failed: 1 });
    expect(smtp.messages).toHaveLength(0);
  });

  it('keeps the message queued while the server is down, then delivers it once it is back', async () => {
    const down = await startTestSmtpServer();
    await down.stop();
    const config = makeConfig(down.url);
    const first = await store.mail.enqueue(rendered());
    const second = await store.mail.enqueue(rendered(epochReport({ epoch: '20240102-020000' })));

    const t0 = new Date();
    // The first failure shows the server is unreachable: the second message is not tried.
    expect(await deliverQueuedMail(store, config, { now: t0 })).toEqual({ sent: 0, failed: 1, pending: 2 });
    expect(await get(first)).toMatchObject({ status: 'queued', attempts: 1 });
    expect((await get(first)).lastError).toMatch(/ECONNECTION|ECONNREFUSED/);
    expect(await get(second)).toMatchObject({ status: 'queued', attempts: 0, lastError: null });

    smtp = await startTestSmtpServer();
    config.mail.smtp = smtp.url;
    expect(await deliverQueuedMail(store, config, { now: later(31) })).toEqual({ sent: 2, failed: 0, pending: 0 });
    expect(await deliverQueuedMail(store, config, { now: later(3600) })).toEqual({ sent: 0, failed: 0, pending: 0 });
    expect(smtp.messages).toHaveLength(2);
    const subjects = await Promise.all(smtp.messages.map(async (m) => (await PostalMime.parse(m.raw)).subject));
    expect(subjects.sort()).toEqual([
      `[provisioner] Lincoln Unified School District: users.csv applied with 3 errors (${EPOCH})`,
      '[provisioner] Lincoln Unified School District: users.csv applied with 3 errors (20240102-020000)',
    ]);
  });

  it('backs off 30 s, 1 min, 2 min ... up to an hour', () => {
    expect([1, 2, 3, 4, 7, 8, 20].map(backoffMs)).toEqual([30_000, 60_000, 120_000, 240_000, 1_920_000, 3_600_000, 3_600_000]);
  });

  it('delivers only the named tenant', async () => {
    smtp = await startTestSmtpServer();
    const config = makeConfig(smtp.url);
    await store.mail.enqueue(rendered());
    await store.mail.enqueue(rendered(epochReport({ tenantId: 'other-district', tenantName: 'Other District' })));
    expect(await deliverQueuedMail(store, config, { tenant: 'other-district' })).toEqual({ sent: 1, failed: 0, pending: 0 });
    expect(await store.mail.summary('lincoln-usd')).toMatchObject({ queued: 1, sent: 0 });
    expect(await store.mail.summary()).toMatchObject({ queued: 1, sent: 1 });
  });
});

describe('report mail without SMTP', () => {
  it('writes an .eml file into the outbox with the subject and the attachment', async () => {
    const config = makeConfig();
    const id = await store.mail.enqueue(rendered());
    expect(await deliverQueuedMail(store, config)).toEqual({ sent: 1, failed: 0, pending: 0 });

    const row = await get(id);
    const files = fs.readdirSync(config.mail.outbox);
    expect(files).toEqual([emlName(row)]);
    expect(files[0]).toMatch(new RegExp(`^\\d{8}-\\d{6}-lincoln-usd-${id}\\.eml$`));
    const raw = fs.readFileSync(path.join(config.mail.outbox, files[0]));
    expect(raw.toString('latin1')).toContain('\r\n'); // RFC 822 line ends
    const mail = await PostalMime.parse(raw);
    expect(mail.subject).toBe(`[provisioner] Lincoln Unified School District: users.csv applied with 3 errors (${EPOCH})`);
    expect(mail.attachments.map((a) => a.filename)).toEqual(['errors.csv']);
    expect(Buffer.from(mail.attachments[0].content as ArrayBuffer).equals(ERRORS_CSV)).toBe(true);
    expect(row).toMatchObject({ status: 'sent', messageId: mail.messageId });
  });
});

describe('from outcome to report (the outbox)', () => {
  const kinds = new KindRegistry();
  const log = silentLogger();

  /** A real import of `lines` (users.csv, samegoal-users), recorded as an outcome. */
  async function outcome(lines: string[], over: Partial<OutcomePayload> = {}, tenant = 'lincoln-usd'): Promise<number> {
    const file = path.join(dir, `upload-${Math.random().toString(36).slice(2)}.csv`);
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = await importFile({
      store, kinds, hasher: null, tenant, kind: 'samegoal-users', options: { ...DEFAULT_OPTIONS, siteMap: {} }, encoding: 'utf-8',
      maxRecordBytes: 1 << 20, digestKey: null, localPath: file, epoch: EPOCH, file: 'users.csv', runId: null, mode: 'apply',
    });
    const payload: OutcomePayload = {
      status: r.status, files: [{ file: 'users.csv', kind: 'samegoal-users', status: r.status, message: r.message, counts: r.counts, importId: r.importId }],
      location: `/upload/bak/${EPOCH}`, notes: [], staleUploads: [], operators: false, finishedAt: new Date().toISOString(), ...over,
    };
    return (await store.outbox.record({ tenant, kind: 'epoch', dedupeKey: `epoch:${Math.random()}`, epoch: EPOCH, payload, filed: true })).id;
  }
  const HEADER = 'user_id,first_name,last_name,email';
  const mails = async () => (await store.mail.list('lincoln-usd', 100)).reverse();

  it('queues nothing for a clean import with when: failures, one report with when: always, and each outcome once', async () => {
    await outcome([HEADER, 'u1,Ada,Lovelace,ada@x.example']);
    expect(await reportOutcomes({ store, config: makeConfig(undefined, [makeTenant({ when: 'failures' })]), log })).toBe(0);
    expect(await store.outbox.unreported()).toEqual([]);
    expect(await mails()).toEqual([]);

    await outcome([HEADER, 'u2,Alan,Turing,alan@x.example']);
    const config = makeConfig(undefined, [makeTenant({ when: 'always' })]);
    expect(await reportOutcomes({ store, config, log })).toBe(1);
    expect(await reportOutcomes({ store, config, log })).toBe(0);
    const [mail] = await mails();
    expect(mail.subject).toBe(`[provisioner] Lincoln Unified School District: users.csv applied (${EPOCH})`);
    expect(mail.text).toContain('The 1 row was applied.');
    expect(mail.to).toEqual(['it@lincoln.example']); // no operators unless held or failed
  });

  it('attaches errors.csv rebuilt from the database, with a BOM, and the first errors in the text', async () => {
    await outcome([HEADER, 'u1,Zoë,Lovelace,ada@x.example', "u2,=cmd,O'Brien,not-an-email", 'u3,Grace,Hopper,also-bad']);
    expect(await reportOutcomes({ store, config: makeConfig(), log })).toBe(1);
    const [mail] = await mails();
    expect(mail.text).toContain('2 of 3 rows could not be applied; fix them in the attached errors.csv');
    expect(mail.text).toContain('line 3: email "not-an-email": is not a valid e-mail address');
    const csv = Buffer.from(mail.attachments[0].content, 'base64').toString('utf8');
    expect(csv).toBe(
      '\uFEFFuser_id,first_name,last_name,email,error\r\n' +
        `u2,'=cmd,O'Brien,not-an-email,"line 3: email ""not-an-email"": is not a valid e-mail address"\r\n` +
        'u3,Grace,Hopper,also-bad,"line 4: email ""also-bad"": is not a valid e-mail address"\r\n',
    );
  });

  it('tells the operators of a hold whatever the tenant asked for', async () => {
    await outcome([HEADER, 'u1,Ada,Lovelace,bad'], { status: 'held', operators: true });
    await reportOutcomes({ store, config: makeConfig(undefined, [makeTenant({ when: 'never' })]), log });
    const [mail] = await mails();
    expect(mail.to).toEqual(['ops@vendor.example']);
  });

  it('replaces an attachment over 10 MB with a note saying where the file is', async () => {
    const bad = Array.from({ length: 110_000 }, (_, i) => `u${i},First${i},Last${i},not-an-email-address-${i}-${'x'.repeat(40)}`);
    await outcome([HEADER, ...bad]);
    await reportOutcomes({ store, config: makeConfig(), log });
    const [mail] = await mails();
    expect(mail.attachments).toEqual([]);
    expect(mail.text).toMatch(new RegExp(`errors\\.csv \\(\\d+\\.\\d MB\\) is too large to attach to an e-mail; it is in /upload/bak/${EPOCH} on your SFTP account\\.`));
    expect(mail.text).toContain('fix them in errors.csv (too large to mail;');
  });

  it('reports uploads that never completed once, under when: failures', async () => {
    const payload: OutcomePayload = { status: 'applied', files: [], location: null, notes: [], staleUploads: ['20231231-020000'], operators: false, finishedAt: new Date().toISOString() };
    await store.outbox.recordStale('lincoln-usd', ['20231231-020000'], { tenant: 'lincoln-usd', kind: 'stale', dedupeKey: 'stale:x', epoch: null, payload, filed: true });
    expect(await store.uploads.unreportedStale('lincoln-usd', ['20231231-020000', '20240101-000000'])).toEqual(['20240101-000000']);
    expect(await reportOutcomes({ store, config: makeConfig(), log })).toBe(1);
    const [mail] = await mails();
    expect(mail.text).toContain('upload 20231231-020000 never got its COMPLETE file');
  });

  it('a stale report is wanted under when: failures', () => {
    const report = epochReport({ files: [], status: 'applied', staleUploads: ['20231231-020000'] });
    expect(shouldNotify('failures', report)).toBe(true);
    const mail = renderReport(report);
    expect(mail.subject).toBe(`[provisioner] Lincoln Unified School District: 1 upload never completed (${EPOCH})`);
    expect(mail.html).toContain('never got its COMPLETE file');
  });
});

describe('rendering', () => {
  it('escapes customer data in the HTML and leaves the text as it is', () => {
    const evil = '<script>alert(1)</script>.csv';
    const report = epochReport({
      tenantName: 'Lincoln <b>Unified</b>',
      files: [
        fileReport({ file: evil, sampleErrors: ['line 2: first_name "<img src=x onerror=alert(2)>": is too long'] }),
        fileReport({ file: 'students.csv', status: 'rejected', message: 'misnamed column "<i>GRADE</i>"', sampleErrors: [], errorsCsvName: null }),
      ],
      status: 'rejected',
    });
    const mail = renderReport(report);
    expect(mail.html).not.toContain('<script>');
    expect(mail.html).not.toContain('<img');
    expect(mail.html).not.toContain('<b>Unified');
    expect(mail.html).not.toContain('<i>GRADE');
    expect(mail.html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;.csv');
    expect(mail.html).toContain('&lt;img src&#x3D;x onerror&#x3D;alert(2)&gt;');
    expect(mail.text).toContain(evil);
    expect(mail.text).toContain('The file was rejected: misnamed column "<i>GRADE</i>"; nothing was changed.');
    expect(mail.subject).toBe(
      `[provisioner] Lincoln <b>Unified</b>: ${evil} applied with 3 errors, students.csv rejected (${EPOCH})`,
    );
  });

  it('keeps the subject on one line whatever the file name holds', () => {
    const mail = renderReport(epochReport({ files: [fileReport({ file: 'users\r\nBcc: x@evil.example.csv' })] }));
    expect(mail.subject).not.toMatch(/[\r\n]/);
  });

  it('uses a tenant template folder for the files it holds, and the shipped ones for the rest', () => {
    const custom = path.join(dir, 'templates-lincoln');
    fs.mkdirSync(custom);
    fs.writeFileSync(path.join(custom, 'report.subject.hbs'), 'Roster {{epoch}} for {{tenantName}}: {{status}}\n');
    const mail = renderReport(epochReport(), custom);
    expect(mail.subject).toBe(`Roster ${EPOCH} for Lincoln Unified School District: applied with errors`);
    expect(mail.text).toContain('3 of 120 rows could not be applied');
    expect(mail.html).toContain('<!DOCTYPE html>');
  });

  it('falls back to the shipped template when a tenant template is broken', () => {
    const custom = path.join(dir, 'broken');
    fs.mkdirSync(custom);
    fs.writeFileSync(path.join(custom, 'report.subject.hbs'), 'Roster {{#if epoch}} unclosed');
    const mail = renderReport(epochReport(), custom);
    expect(mail.subject).toBe(`[provisioner] Lincoln Unified School District: users.csv applied with 3 errors (${EPOCH})`);
    expect(mail.problems?.[0]).toContain('report.subject.hbs');
  });
});
