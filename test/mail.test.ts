// The report mail end to end: queued in a real SQLite file, rendered from the shipped
// templates, delivered to a real SMTP server (or written to the outbox), parsed back.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import PostalMime from 'postal-mime';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS, type Config, type TenantConfig } from '../src/config.js';
import { openDatabase, type Db } from '../src/db/database.js';
import { backoffMs, deliverQueuedMail, emlName, mailQueueSummary } from '../src/mail/outbox.js';
import type { MailRow } from '../src/mail/queue.js';
import { queueReport, renderReport, shouldNotify, type EpochReport, type FileReport } from '../src/mail/report.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';

const EPOCH = '20240101-020000';

let dir: string;
let db: Db;
let smtp: TestSmtpServer | undefined;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-mail-'));
  db = openDatabase(path.join(dir, 'provisioner.db'));
});

afterEach(async () => {
  db.close();
  await smtp?.stop();
  smtp = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

function makeConfig(smtpUrl?: string): Config {
  return {
    source: '<test>',
    database: path.join(dir, 'provisioner.db'),
    workDir: path.join(dir, 'work'),
    concurrency: 1,
    leaseSeconds: 60,
    log: { level: 'silent', format: 'json' },
    mail: {
      from: 'Account Provisioning <provisioning@vendor.example>',
      smtp: smtpUrl,
      outbox: path.join(dir, 'outbox'),
      operators: ['ops@vendor.example'],
      timeoutSeconds: 5,
    },
    tenants: [],
  };
}

function makeTenant(notify: Partial<TenantConfig['notify']> = {}): TenantConfig {
  return {
    id: 'lincoln-usd',
    name: 'Lincoln Unified School District',
    enabled: true,
    schedule: '*/5 * * * *',
    timezone: 'UTC',
    settleSeconds: 60,
    staleAfterHours: 24,
    sftp: { host: '127.0.0.1', port: 22, username: 'lincoln', password: 'x', hostKey: 'SHA256:x', timeoutSeconds: 5 },
    paths: { upload: '/upload', bak: '/upload/bak', tmp: '/tmp' },
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

const queueWithErrors = (config: Config, tenant = makeTenant(), report = epochReport()) =>
  queueReport(db, config, tenant, report, [{ filename: 'errors.csv', content: ERRORS_CSV, contentType: 'text/csv' }]);

const rows = (): MailRow[] => db.prepare('SELECT * FROM mail_queue ORDER BY id').all() as MailRow[];
const later = (seconds: number) => new Date(Date.now() + seconds * 1000);
const address = (a: unknown) => (a as { address?: string } | undefined)?.address;

describe('report mail over SMTP', () => {
  it('delivers a queued report once, with the right headers and errors.csv byte for byte', async () => {
    smtp = await startTestSmtpServer();
    const config = makeConfig(smtp.url);
    const id = queueWithErrors(config);
    expect(id).toEqual(expect.any(Number));

    const result = await deliverQueuedMail(db, config);
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

    const [row] = rows();
    expect(row).toMatchObject({ id, status: 'sent', attempts: 1, last_error: null });
    expect(row.sent_at).not.toBeNull();
    expect(row.message_id).toBe(mail.messageId);

    expect(await deliverQueuedMail(db, config, { now: later(7200) })).toEqual({ sent: 0, failed: 0, pending: 0 });
    expect(smtp.messages).toHaveLength(1);
  });

  it('sends a held report to the operators as well', async () => {
    smtp = await startTestSmtpServer();
    const config = makeConfig(smtp.url);
    const held = fileReport({
      status: 'held',
      message: 'the full sync would deactivate 40 of 120 active users (33%), more than the limit of 10%',
      counts: { rows: 80, created: 0, updated: 0, unchanged: 0, deactivated: 0, archived: 0, failed: 0 },
      sampleErrors: [],
      errorsCsvName: null,
    });
    queueReport(db, config, makeTenant(), epochReport({ files: [held] }), []);
    await deliverQueuedMail(db, config);
    expect(smtp.messages).toHaveLength(1);
    expect(smtp.messages[0].to.sort()).toEqual(['it@lincoln.example', 'ops@vendor.example']);
    const mail = await PostalMime.parse(smtp.messages[0].raw);
    expect(mail.subject).toContain('users.csv held');
    expect(mail.text).toContain('Held: the full sync would deactivate 40 of 120 active users (33%), more than the limit of 10%; nothing was changed.');
  });

  it('keeps the message queued through an outage (4xx answers) and delivers it exactly once after the back-off', async () => {
    smtp = await startTestSmtpServer();
    const config = makeConfig(smtp.url);
    queueWithErrors(config);
    smtp.rejectNext(2);

    const t0 = new Date();
    expect(await deliverQueuedMail(db, config, { now: t0 })).toEqual({ sent: 0, failed: 1, pending: 1 });
    let [row] = rows();
    expect(row).toMatchObject({ status: 'queued', attempts: 1 });
    expect(row.last_error).toMatch(/451/);
    expect(row.next_attempt_at).toBe(new Date(t0.getTime() + 30_000).toISOString());
    expect(mailQueueSummary(db)).toMatchObject({ queued: 1, sent: 0, lastError: row.last_error });

    // Not due yet: nothing is tried.
    expect(await deliverQueuedMail(db, config, { now: new Date(t0.getTime() + 10_000) })).toEqual({ sent: 0, failed: 0, pending: 1 });

    const t1 = new Date(t0.getTime() + 31_000);
    expect(await deliverQueuedMail(db, config, { now: t1 })).toEqual({ sent: 0, failed: 1, pending: 1 });
    [row] = rows();
    expect(row.attempts).toBe(2);
    expect(row.next_attempt_at).toBe(new Date(t1.getTime() + 60_000).toISOString());

    const t2 = new Date(t1.getTime() + 61_000);
    expect(await deliverQueuedMail(db, config, { now: t2 })).toEqual({ sent: 1, failed: 0, pending: 0 });
    expect(await deliverQueuedMail(db, config, { now: new Date(t2.getTime() + 86_400_000) })).toEqual({ sent: 0, failed: 0, pending: 0 });
    expect(smtp.messages).toHaveLength(1);
    expect(rows()[0]).toMatchObject({ status: 'sent', attempts: 3 });
    expect(mailQueueSummary(db)).toEqual({ queued: 0, sent: 1, oldestQueuedAt: null, lastError: null });
  });

  it('keeps the message queued while the server is down, then delivers it once it is back', async () => {
    const down = await startTestSmtpServer();
    await down.stop();
    const config = makeConfig(down.url);
    queueWithErrors(config);
    queueWithErrors(config, makeTenant(), epochReport({ epoch: '20240102-020000' }));

    const t0 = new Date();
    // The first failure shows the server is unreachable: the second message is not tried.
    expect(await deliverQueuedMail(db, config, { now: t0 })).toEqual({ sent: 0, failed: 1, pending: 2 });
    const [first, second] = rows();
    expect(first).toMatchObject({ status: 'queued', attempts: 1 });
    expect(first.last_error).toMatch(/ECONNECTION|ECONNREFUSED/);
    expect(second).toMatchObject({ status: 'queued', attempts: 0, last_error: null });

    smtp = await startTestSmtpServer();
    config.mail.smtp = smtp.url;
    expect(await deliverQueuedMail(db, config, { now: later(31) })).toEqual({ sent: 2, failed: 0, pending: 0 });
    expect(await deliverQueuedMail(db, config, { now: later(3600) })).toEqual({ sent: 0, failed: 0, pending: 0 });
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
    queueWithErrors(config);
    const other = { ...makeTenant(), id: 'other-district', name: 'Other District' };
    queueWithErrors(config, other, epochReport({ tenantId: other.id, tenantName: other.name }));
    expect(await deliverQueuedMail(db, config, { tenant: 'other-district' })).toEqual({ sent: 1, failed: 0, pending: 0 });
    expect(mailQueueSummary(db, 'lincoln-usd')).toMatchObject({ queued: 1, sent: 0 });
    expect(mailQueueSummary(db)).toMatchObject({ queued: 1, sent: 1 });
  });
});

describe('report mail without SMTP', () => {
  it('writes an .eml file into the outbox with the subject and the attachment', async () => {
    const config = makeConfig();
    const id = queueWithErrors(config)!;
    expect(await deliverQueuedMail(db, config)).toEqual({ sent: 1, failed: 0, pending: 0 });

    const [row] = rows();
    const files = fs.readdirSync(config.mail.outbox);
    expect(files).toEqual([emlName(row)]);
    expect(files[0]).toMatch(new RegExp(`^\\d{8}-\\d{6}-lincoln-usd-${id}\\.eml$`));
    const raw = fs.readFileSync(path.join(config.mail.outbox, files[0]));
    expect(raw.toString('latin1')).toContain('\r\n'); // RFC 822 line ends
    const mail = await PostalMime.parse(raw);
    expect(mail.subject).toBe(`[provisioner] Lincoln Unified School District: users.csv applied with 3 errors (${EPOCH})`);
    expect(mail.attachments.map((a) => a.filename)).toEqual(['errors.csv']);
    expect(Buffer.from(mail.attachments[0].content as ArrayBuffer).equals(ERRORS_CSV)).toBe(true);
    expect(row).toMatchObject({ status: 'sent', message_id: mail.messageId });
  });
});

describe('queueing reports', () => {
  it('queues nothing for a clean run with when: failures, and queues it with when: always', () => {
    const config = makeConfig();
    const clean = epochReport({
      files: [fileReport({ status: 'applied', sampleErrors: [], errorsCsvName: null, counts: { rows: 120, created: 120, updated: 0, unchanged: 0, deactivated: 0, archived: 0, failed: 0 } })],
    });
    expect(shouldNotify('failures', clean)).toBe(false);
    expect(queueReport(db, config, makeTenant({ when: 'failures' }), clean, [])).toBeNull();
    expect(queueReport(db, config, makeTenant({ when: 'never' }), epochReport(), [])).toBeNull();
    expect(rows()).toHaveLength(0);

    expect(queueReport(db, config, makeTenant({ when: 'always' }), clean, [])).toEqual(expect.any(Number));
    const [row] = rows();
    expect(row.subject).toBe(`[provisioner] Lincoln Unified School District: users.csv applied (${EPOCH})`);
    expect(row.text).toContain('All 120 rows were applied.');
    expect(JSON.parse(row.mail_to)).toEqual(['it@lincoln.example']); // no operators unless held
  });

  it('reports a stale upload under when: failures', () => {
    const report = epochReport({ files: [], status: 'applied', staleUploads: ['20231231-020000'] });
    expect(shouldNotify('failures', report)).toBe(true);
    const mail = renderReport(report);
    expect(mail.subject).toBe(`[provisioner] Lincoln Unified School District: 1 upload never completed (${EPOCH})`);
    expect(mail.text).toContain('upload 20231231-020000 never got its COMPLETE file');
    expect(mail.html).toContain('never got its COMPLETE file');
  });

  it('queues one row when the same epoch is queued twice', () => {
    const config = makeConfig();
    const a = queueWithErrors(config);
    const b = queueWithErrors(config);
    expect(b).toBe(a);
    expect(rows()).toHaveLength(1);
    expect(rows()[0].dedupe_key).toBe(`report:lincoln-usd:${EPOCH}`);
  });

  it('stays synchronous inside a transaction, and a rolled-back import leaves no mail', () => {
    const config = makeConfig();
    expect(() =>
      db.transaction(() => {
        queueWithErrors(config);
        throw new Error('import failed');
      })(),
    ).toThrow('import failed');
    expect(rows()).toHaveLength(0);
    db.transaction(() => queueWithErrors(config))();
    expect(rows()).toHaveLength(1);
  });

  it('replaces an attachment over 10 MB with a note', () => {
    const config = makeConfig();
    const big = Buffer.alloc(10 * 1024 * 1024 + 1, 0x61);
    queueReport(db, config, makeTenant(), epochReport(), [{ filename: 'errors.csv', content: big }]);
    const [row] = rows();
    expect(JSON.parse(row.attachments)).toEqual([]);
    expect(row.text).toContain(`errors.csv (10.0 MB) is too large to attach to an e-mail; it is in /upload/bak/${EPOCH} on your SFTP account.`);
    expect(row.text).toContain('fix them in errors.csv (too large to mail;');
    expect(row.text).not.toContain('the attached errors.csv');
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
    const config = makeConfig();
    queueWithErrors(config, makeTenant({ templates: custom }));
    const [row] = rows();
    expect(row.subject).toBe(`Roster ${EPOCH} for Lincoln Unified School District: applied with errors`);
    expect(row.text).toContain('3 of 120 rows could not be applied');
    expect(row.html).toContain('<!DOCTYPE html>');
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
