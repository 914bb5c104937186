// Undo (`provisioner revert`) through the real CLI on both stores: every user an import changed
// gets its previous values back (updates, archives, full-sync deactivations, passwords as their
// previous hashes; users it created deactivated), as a new import in the actor's name, reported
// to the district once and in the audit trail; refused with the reason when a later import
// changed the same users (unless --force), when undone already, or when it changed nobody.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dbUsers, mails, type DbUser } from './harness/checks.js';
import { csv, World, worlds } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const ROSTER = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD';
const u = (id: string, last = 'Smith', email = `${id}@lincoln.example`, active = '1') => `${id},First-${id},${last},${email},staff,100,${active}`;
const byId = (users: DbUser[]) => Object.fromEntries(users.map((x) => [x.external_id, x]));
// Only what an undo must restore (updated_at and updated_by say who undid it).
const state = (x: DbUser) => ({ email: x.email, last_name: x.last_name, active: Number(x.active), archived_at: x.archived_at, password_hash: x.password_hash });

// The store decides here, not the SFTP server: one world per store.
const perStore = worlds().filter((w, i, all) => all.findIndex((o) => o[2] === w[2]) === i);

describe.each(perStore)('revert on %s', (_label, kind, store) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `revert-${store}-${ctx.task.name}`, { store });
    world.addTenant('lincoln', { options: { fullSync: true, maxDeactivatePercent: 100, archiveInactive: true, actor: 'sync@lincoln.example' }, notify: { to: ['it@lincoln.example'], when: 'failures' } });
  });
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  async function runNow(): Promise<void> {
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  }
  const importIds = () => world.query<{ id: number }>('SELECT id FROM imports WHERE tenant = ? ORDER BY id', 'lincoln').map((r) => Number(r.id));

  it('restores every user an import changed (update, archive, full-sync deactivation, create), once, reported and audited', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, u('u1'), u('u2'), u('u3'), u('u4')) });
    await runNow();
    const before = byId(dbUsers(world, 'lincoln'));
    // The next night: u1's e-mail changes, u2 leaves (archived), u3 is missing (deactivated), u5 is new.
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, u('u1', 'Smith', 'new-u1@lincoln.example'), u('u2', 'Smith', 'u2@lincoln.example', '0'), u('u4'), u('u5')) });
    await runNow();
    const [first, second] = importIds();
    const after = byId(dbUsers(world, 'lincoln'));
    expect(after.u1.email).toBe('new-u1@lincoln.example');
    expect(after.u2.archived_at).not.toBeNull();
    expect(after.u2.email).toMatch(/^u2@lincoln\.example_\d{4}$/);
    expect(Number(after.u3.active)).toBe(0);
    expect(Number(after.u5.active)).toBe(1);
    const mailsBefore = mails(world).length;

    const r = await world.cli(['revert', '--tenant', 'lincoln', String(second)]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`import ${second} \\(20240102-020000/users\\.csv\\) undone as import \\d+: 3 user\\(s\\) got their previous values back, 1 user\\(s\\) it created deactivated`));

    const now = byId(dbUsers(world, 'lincoln'));
    for (const id of ['u1', 'u2', 'u3', 'u4']) expect(state(now[id]), id).toEqual(state(before[id]));
    expect(Number(now.u5.active)).toBe(0); // created by the undone import: deactivated, never deleted
    const actor = String(now.u1.updated_by);
    expect(actor).toMatch(/.+@.+/);
    expect(actor).not.toBe('sync@lincoln.example');

    // A new import, in the actor's name, with its counts; the undone import is kept as it was.
    const [undo] = world.query<Record<string, unknown>>('SELECT * FROM imports WHERE id > ? ORDER BY id', second);
    expect(undo).toMatchObject({ tenant: 'lincoln', status: 'applied', message: `undo of import ${second}`, actor, updated: 3, deactivated: 1, reverts_import_id: second });
    expect(world.query('SELECT status FROM imports WHERE id = ?', second)).toEqual([{ status: 'applied' }]);

    // The history says why u1's e-mail changed back, and who did it.
    const history = JSON.parse((await world.cli(['users', '--tenant', 'lincoln', '--history', 'u1', '--json'])).stdout);
    expect(history.at(-1)).toMatchObject({ action: 'revert', actor, changes: [{ field: 'email', from: 'new-u1@lincoln.example', to: 'u1@lincoln.example' }] });

    // Reported to the district once (it asked for failures only: an undo is always told), and audited.
    const sent = mails(world).slice(mailsBefore);
    expect(sent).toHaveLength(1);
    expect(sent[0].to).toEqual(['it@lincoln.example']);
    expect(sent[0].subject).toContain('undone');
    expect(sent[0].text).toContain('3 users got their previous values back; 1 user it had created was deactivated');
    expect(sent[0].text).toContain(`were undone by ${actor}`);
    const audit = world.query<Record<string, unknown>>('SELECT actor, action, tenant, target, result FROM audit');
    expect(audit).toEqual([{ actor, action: 'revert', tenant: 'lincoln', target: `import ${second}`, result: 'reverted' }]);
    const status = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout)[0];
    expect(status.audit).toEqual([expect.objectContaining({ actor, action: 'revert', target: `import ${second}`, result: 'reverted' })]);

    // Once: a second undo is refused and changes nothing; so is undoing the first import now (its users changed since).
    const again = await world.cli(['revert', '--tenant', 'lincoln', String(second)]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`was already undone by import ${undo.id}`);
    const older = await world.cli(['revert', '--tenant', 'lincoln', String(first)]);
    expect(older.code).toBe(1);
    expect(older.stderr).toContain('later imports changed');
    expect(mails(world).slice(mailsBefore)).toHaveLength(1);
    expect(world.query('SELECT result FROM audit ORDER BY id').map((a) => a.result)).toEqual(['reverted', 'refused', 'refused']);
  });

  it('refuses when a later import changed the same users, names them, and --force undoes only what the import changed', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, u('u1'), u('u2')) });
    await runNow();
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, u('u1', 'Smith', 'new-u1@lincoln.example'), u('u2')) });
    await runNow();
    world.putEpoch('lincoln', '20240103-020000', { 'users.csv': csv(HEADER, u('u1', 'Jones', 'new-u1@lincoln.example'), u('u2')) });
    await runNow();
    const [, second, third] = importIds();

    const refused = await world.cli(['revert', '--tenant', 'lincoln', String(second)]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`later imports changed 1 of the same users (first: u1 in import ${third})`);
    expect(refused.stderr).toContain('--force');
    expect(refused.stderr).toContain(`u1 (import ${third})`);
    expect(byId(dbUsers(world, 'lincoln')).u1.email).toBe('new-u1@lincoln.example');

    const forced = await world.cli(['revert', '--tenant', 'lincoln', String(second), '--force']);
    expect(forced.code, forced.stdout + forced.stderr).toBe(0);
    const u1 = byId(dbUsers(world, 'lincoln')).u1;
    expect(u1.email).toBe('u1@lincoln.example'); // what import 2 changed
    expect(u1.last_name).toBe('Jones'); // what import 3 changed stays
    expect(world.query('SELECT result, detail FROM audit ORDER BY id').map((a) => a.result)).toEqual(['refused', 'reverted']);
    expect(world.query('SELECT detail FROM audit ORDER BY id DESC')[0].detail).toContain('(forced)');
  });

  it('is no newer upload: a held full sync is still released after an undo, not superseded by it', async () => {
    const ten = Array.from({ length: 10 }, (_, i) => u(`u${i}`));
    world.addTenant('lincoln', { options: { fullSync: true, maxDeactivatePercent: 10 }, notify: { when: 'never' } });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, ...ten) });
    await runNow();
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, u('u0', 'Renamed'), ...ten.slice(1)) });
    await runNow();
    const [, renamed] = importIds();
    world.putEpoch('lincoln', '20240103-020000', { 'users.csv': csv(HEADER, ten[0]) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(1); // held
    expect((await world.cli(['revert', '--tenant', 'lincoln', String(renamed)])).code).toBe(0);
    const held = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout)[0].held;
    expect(held).toEqual([expect.objectContaining({ epoch: '20240103-020000', supersededBy: null })]);
    const r = await world.cli(['release', '--tenant', 'lincoln', '20240103-020000']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(dbUsers(world, 'lincoln').filter((x) => Number(x.active)).map((x) => x.external_id)).toEqual(['u0']);
  });

  it('restores a password as its previous hash', async () => {
    world.addTenant('jefferson', { files: { 'students.csv': 'roster-students' }, options: { overwritePassword: true } });
    world.putEpoch('jefferson', '20240101-020000', { 'students.csv': csv(ROSTER, 's1,Ann,Lee,5,101,s1@jefferson.example,alpha-1') });
    expect((await world.cli(['run', '--tenant', 'jefferson', '--now'])).code).toBe(0);
    const original = dbUsers(world, 'jefferson')[0];
    world.putEpoch('jefferson', '20240102-020000', { 'students.csv': csv(ROSTER, 's1,Ann,Lee,6,101,s1@jefferson.example,beta-2') });
    expect((await world.cli(['run', '--tenant', 'jefferson', '--now'])).code).toBe(0);
    expect(dbUsers(world, 'jefferson')[0].password_hash).not.toBe(original.password_hash);
    const [, second] = world.query<{ id: number }>("SELECT id FROM imports WHERE tenant = 'jefferson' ORDER BY id").map((r) => Number(r.id));

    const r = await world.cli(['revert', '--tenant', 'jefferson', String(second)]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(dbUsers(world, 'jefferson')[0].password_hash).toBe(original.password_hash);
    expect((await world.usersJson('jefferson'))[0].attributes).toEqual({ GRADE: '5' }); // other columns too
    // An unchanged password is still known by its digest: the same file again changes nothing.
    world.putEpoch('jefferson', '20240103-020000', { 'students.csv': csv(ROSTER, 's1,Ann,Lee,5,101,s1@jefferson.example,alpha-1') });
    const again = await world.cli(['run', '--tenant', 'jefferson', '--now', '--json']);
    expect(JSON.parse(again.stdout)[0].epochs[0].files[0].counts).toMatchObject({ updated: 0, unchanged: 1 });
    const history = JSON.parse((await world.cli(['users', '--tenant', 'jefferson', '--history', 's1', '--json'])).stdout);
    expect(history.at(-1)).toMatchObject({
      action: 'revert',
      changes: [
        { field: 'password', from: '(hidden)', to: '(hidden)' },
        { field: 'attributes', from: { GRADE: '6' }, to: { GRADE: '5' } },
      ],
    });
  });

  it('refuses what it cannot undo: an import that changed nobody, another tenant\'s import, no such import', async () => {
    world.addTenant('jefferson');
    world.putEpoch('lincoln', '20240101-020000', { 'usrs.csv': csv(HEADER, u('u1')) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(1);
    world.putEpoch('jefferson', '20240101-020000', { 'users.csv': csv(HEADER, u('j1')) });
    expect((await world.cli(['run', '--tenant', 'jefferson', '--now'])).code).toBe(0);
    const [rejected] = importIds();
    const [theirs] = world.query<{ id: number }>("SELECT id FROM imports WHERE tenant = 'jefferson'").map((r) => Number(r.id));

    const nothing = await world.cli(['revert', '--tenant', 'lincoln', String(rejected)]);
    expect(nothing.code).toBe(1);
    expect(nothing.stderr).toContain(`import ${rejected} was rejected: it changed no user, so there is nothing to undo`);
    const other = await world.cli(['revert', '--tenant', 'lincoln', String(theirs)]);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain(`lincoln has no import ${theirs}`);
    expect(byId(dbUsers(world, 'jefferson')).j1.active).toBeTruthy();
    const missing = await world.cli(['revert', '--tenant', 'lincoln', 'latest']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('IMPORT_ID must be the number of an import');
  });
});
