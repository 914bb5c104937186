// Who is asking, and may they: console accounts from the configuration (scrypt hashes from
// `provisioner hash-password`) signed in with a session kept in the store (so every daemon of a
// cluster knows it; the cookie is random and only its hash is stored), or an authenticating
// proxy's user header, believed only from http.trustedProxies. No anonymous access to the console.
//
// Every POST carries a CSRF token: the session's own, or (the sign-in form, proxy users) one
// that must match an HttpOnly cookie. Cookies are HttpOnly and SameSite=Strict, and Secure
// behind TLS (X-Forwarded-Proto: https from a trusted proxy). Failed sign-ins are limited per
// address and name (in this process).
import crypto from 'node:crypto';
import net from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ConsoleRole, HttpConfig } from '../config.js';
import { verifyPassword } from '../import/passwords.js';
import { HttpError } from './http-error.js';
import type { HttpDeps } from './server.js';
import { renderPage } from './views.js';

export interface ConsoleUser {
  name: string;
  role: ConsoleRole;
  via: 'session' | 'proxy';
  /** The token this user's forms carry. */
  csrf: string;
  isOperator: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    user: ConsoleUser | null;
  }
}

export interface Auth {
  /** preHandler: a signed-in user, else the sign-in page (GET) or 401. */
  requireUser(req: FastifyRequest, reply: FastifyReply): Promise<unknown>;
  /** preHandler: an operator (viewers get 403). */
  requireOperator(req: FastifyRequest, reply: FastifyReply): Promise<unknown>;
  /** Throws 403 unless the form carries this user's CSRF token. */
  checkCsrf(req: FastifyRequest): void;
  /** The name recorded for what a user does (imports, audit trail). */
  actor(user: ConsoleUser): string;
}

const SESSION_COOKIE = 'prov_session';
const CSRF_COOKIE = 'prov_csrf';
const UNAUTHENTICATED = new Set(['/healthz', '/readyz', '/metrics', '/console.css']);
/** A well-formed hash that matches nothing: unknown names cost as much time as known ones. */
const DUMMY_HASH = '$scrypt$ln=14,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest('hex');
const token = () => crypto.randomBytes(32).toString('base64url');
const sameToken = (a: string | undefined, b: string | undefined) =>
  !!a && !!b && a.length === b.length && crypto.timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** A path on this console to go back to after signing in (never another site). */
export const safeNext = (next: unknown): string => (typeof next === 'string' && /^\/(?![/\\])/.test(next) && !/[\r\n]/.test(next) ? next : '/');

/** IPv4-mapped IPv6 (::ffff:127.0.0.1) as plain IPv4, for comparing with the configured list. */
const plainIp = (ip: string | undefined) => (ip && ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7)) ? ip.slice(7) : (ip ?? ''));

export function registerAuth(app: FastifyInstance, deps: HttpDeps): Auth {
  const http = deps.config.http!;
  const { store } = deps;
  const limiter = new LoginLimiter();
  const log = deps.log.child({ component: 'console' });
  const trusted = new Set(http.trustedProxies.map(plainIp));
  const account = (name: string) => (Object.hasOwn(http.users, name) ? http.users[name] : undefined);
  const cookieOptions = (req: FastifyRequest) => ({ path: '/', httpOnly: true, sameSite: 'strict' as const, secure: req.protocol === 'https' });

  /** The double-submit token of this browser (sign-in form, proxy users), made when missing. */
  const browserToken = (req: FastifyRequest, reply: FastifyReply): string => {
    const have = req.cookies[CSRF_COOKIE];
    if (have && /^[A-Za-z0-9_-]{43}$/.test(have)) return have;
    const fresh = token();
    reply.setCookie(CSRF_COOKIE, fresh, cookieOptions(req));
    req.cookies[CSRF_COOKIE] = fresh;
    return fresh;
  };

  app.decorateRequest('user', null);
  app.addHook('onRequest', async (req, reply) => {
    if (UNAUTHENTICATED.has(req.url.split('?')[0])) return;
    if (http.proxyHeader && trusted.has(plainIp(req.socket.remoteAddress))) {
      const name = req.headers[http.proxyHeader];
      if (typeof name === 'string' && name.trim()) {
        req.user = { name: name.trim().slice(0, 200), role: http.proxyRole, via: 'proxy', csrf: browserToken(req, reply), isOperator: http.proxyRole === 'operator' };
        return;
      }
    }
    const cookie = req.cookies[SESSION_COOKIE];
    if (!cookie) return;
    const session = await store.sessions.get(sha256(cookie));
    const acct = session ? account(session.username) : undefined;
    // The role is today's configuration's: an account removed or demoted since sign-in is so now.
    if (session && acct) req.user = { name: session.username, role: acct.role, via: 'session', csrf: session.csrf, isOperator: acct.role === 'operator' };
  });

  const auth: Auth = {
    async requireUser(req, reply) {
      if (req.user) return;
      if (req.method === 'GET' || req.method === 'HEAD') return reply.redirect(`/login?next=${encodeURIComponent(req.url)}`, 303);
      throw new HttpError(401, 'Sign in first: this page needs a console account.');
    },
    async requireOperator(req, reply) {
      await auth.requireUser(req, reply);
      if (reply.sent) return reply;
      if (!req.user!.isOperator) throw new HttpError(403, `${req.user!.name} is a viewer: only operators may do this.`);
    },
    checkCsrf(req) {
      const sent = (req.body as Record<string, unknown> | undefined)?._csrf;
      const expected = req.user?.via === 'session' ? req.user.csrf : req.cookies[CSRF_COOKIE];
      if (!sameToken(typeof sent === 'string' ? sent : undefined, expected)) {
        throw new HttpError(403, 'This form has expired or did not come from this console (its security token is missing or wrong). Go back, reload the page and try again.');
      }
    },
    actor: (user) => `console:${user.name}`,
  };

  const loginPage = (req: FastifyRequest, reply: FastifyReply, status: number, extra: Record<string, unknown> = {}) =>
    reply
      .code(status)
      .type('text/html; charset=utf-8')
      .send(
        renderPage('login', {
          title: 'Sign in', csrf: browserToken(req, reply), next: safeNext((req.query as Record<string, unknown>)?.next ?? (req.body as Record<string, unknown>)?.next),
          noAccounts: Object.keys(http.users).length === 0, proxy: !!http.proxyHeader, ...extra,
        }, null),
      );

  app.get('/login', async (req, reply) => {
    if (req.user) return reply.redirect(safeNext((req.query as Record<string, unknown>).next), 303);
    return loginPage(req, reply, 200);
  });

  app.post('/login', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (!sameToken(typeof body._csrf === 'string' ? body._csrf : undefined, req.cookies[CSRF_COOKIE])) {
      return loginPage(req, reply, 403, { error: 'The sign-in form had expired. Please try again.' });
    }
    const name = typeof body.username === 'string' ? body.username.trim() : '';
    const password = typeof body.password === 'string' ? body.password : '';
    const wait = limiter.blockedFor(req.ip, name);
    if (wait > 0) {
      reply.header('Retry-After', String(Math.ceil(wait / 1000)));
      return loginPage(req, reply, 429, { error: `Too many failed sign-ins. Try again in ${Math.ceil(wait / 60_000)} minute(s).`, username: name });
    }
    const acct = account(name);
    const ok = (await verifyPassword(password, acct?.passwordHash ?? DUMMY_HASH).catch(() => false)) && !!acct && password.length > 0;
    if (!ok) {
      limiter.fail(req.ip, name);
      log.warn({ user: name.slice(0, 64), ip: req.ip }, 'console sign-in failed');
      return loginPage(req, reply, 401, { error: 'Wrong user name or password.', username: name });
    }
    limiter.succeed(req.ip, name);
    const cookie = token();
    await store.sessions.create({ idHash: sha256(cookie), username: name, role: acct.role, csrf: token(), seconds: Math.round(http.sessionHours * 3600) });
    await store.sessions.prune().catch(() => 0);
    reply.setCookie(SESSION_COOKIE, cookie, { ...cookieOptions(req), maxAge: Math.round(http.sessionHours * 3600) });
    log.info({ user: name, ip: req.ip }, `console: ${name} signed in`);
    return reply.redirect(safeNext(body.next), 303);
  });

  app.post('/logout', async (req, reply) => {
    auth.checkCsrf(req);
    const cookie = req.cookies[SESSION_COOKIE];
    if (cookie) await store.sessions.delete(sha256(cookie));
    reply.clearCookie(SESSION_COOKIE, { path: '/' });
    return reply.redirect('/login', 303);
  });

  return auth;
}

/** Failed sign-ins: at most 5 per address and name, and 20 per address, in 15 minutes. */
class LoginLimiter {
  private readonly failures = new Map<string, number[]>();
  private static readonly WINDOW_MS = 15 * 60_000;

  blockedFor(ip: string, name: string): number {
    const now = Date.now();
    const wait = (key: string, max: number) => {
      const recent = this.recent(key, now);
      return recent.length >= max ? recent[recent.length - max] + LoginLimiter.WINDOW_MS - now : 0;
    };
    return Math.max(wait(`u:${ip}:${name.toLowerCase()}`, 5), wait(`ip:${ip}`, 20));
  }

  fail(ip: string, name: string): void {
    const now = Date.now();
    for (const key of [`u:${ip}:${name.toLowerCase()}`, `ip:${ip}`]) this.failures.set(key, [...this.recent(key, now), now]);
    if (this.failures.size > 10_000) this.failures.delete(this.failures.keys().next().value!);
  }

  succeed(ip: string, name: string): void {
    this.failures.delete(`u:${ip}:${name.toLowerCase()}`);
  }

  private recent(key: string, now: number): number[] {
    const kept = (this.failures.get(key) ?? []).filter((t) => t > now - LoginLimiter.WINDOW_MS);
    if (kept.length) this.failures.set(key, kept);
    else this.failures.delete(key);
    return kept;
  }
}
