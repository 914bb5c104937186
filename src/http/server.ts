// The daemon's HTTP side (Fastify): health and readiness for the vendor's monitoring, Prometheus
// metrics, and the tier-2 console. /healthz, /readyz and /metrics need no login and show no
// personal data; everything else does (auth.ts). Everything shown comes from the store, so every
// daemon of a cluster shows the same. Started and stopped by the daemon (idempotent).
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cookie from '@fastify/cookie';
import formbody from '@fastify/formbody';
import type { Config } from '../config.js';
import { ConfigError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/types.js';
import type { RunDeps } from '../worker/context.js';
import { registerActions } from './actions.js';
import { registerAuth } from './auth.js';
import { registerConsole } from './console.js';
import { HttpError } from './http-error.js';
import { Metrics } from './metrics.js';
import { consoleCss, renderPage } from './views.js';

/** What the console needs of the daemon that serves it. */
export interface DaemonHandle {
  readonly isReady: boolean;
  /** Runs `fn` with no run of the tenant (or other console action on it) in hand in this process. */
  exclusive<T>(tenant: string, fn: () => Promise<T>): Promise<T>;
}

export interface HttpDeps {
  config: Config;
  store: Store;
  log: Logger;
  daemon: DaemonHandle;
  runDeps(): RunDeps;
}

const READY_TIMEOUT_MS = 3000;

export class HttpServer {
  readonly metrics: Metrics;
  private app: FastifyInstance | undefined;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private bound: { host: string; port: number } | null = null;
  private readonly log: Logger;

  constructor(private readonly deps: HttpDeps) {
    this.log = deps.log.child({ component: 'http' });
    this.metrics = new Metrics(deps.store, deps.config);
  }

  get address(): { host: string; port: number } | null {
    return this.bound;
  }

  start(): Promise<void> {
    this.starting ??= this.listen();
    return this.starting;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.starting?.catch(() => {});
      await this.app?.close();
      if (this.bound) this.log.info(`HTTP server on ${this.bound.host}:${this.bound.port} stopped`);
    })();
    return this.stopping;
  }

  private async listen(): Promise<void> {
    const http = this.deps.config.http!;
    const app = Fastify({
      logger: false,
      // X-Forwarded-For/-Proto are believed only from the configured proxies.
      trustProxy: http.trustedProxies.length ? http.trustedProxies : false,
      bodyLimit: 64 * 1024,
      return503OnClosing: true,
    });
    this.app = app;
    await app.register(cookie);
    await app.register(formbody);
    app.addHook('onSend', async (_req, reply) => {
      reply.header('X-Content-Type-Options', 'nosniff');
      reply.header('Referrer-Policy', 'same-origin');
      reply.header('X-Frame-Options', 'DENY');
      reply.header('Content-Security-Policy', "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
      if (!reply.hasHeader('Cache-Control')) reply.header('Cache-Control', 'no-store');
    });
    this.monitoring(app);
    app.get('/console.css', async (_req, reply) => reply.type('text/css; charset=utf-8').header('Cache-Control', 'max-age=300').send(consoleCss()));
    const auth = registerAuth(app, this.deps);
    registerConsole(app, this.deps, auth);
    registerActions(app, this.deps, auth);
    app.setNotFoundHandler((req, reply) => this.errorPage(req, reply, 404, 'There is no such page.'));
    app.setErrorHandler((err: Error & { statusCode?: number }, req, reply) => {
      const status = err instanceof HttpError ? err.statusCode : err.statusCode && err.statusCode < 500 ? err.statusCode : 500;
      if (status >= 500) this.log.error({ err: errorMessage(err), url: req.url }, `console: ${req.method} ${req.url} failed: ${errorMessage(err)}`);
      return this.errorPage(req, reply, status, status >= 500 ? 'Something went wrong on our side; the daemon log has the details.' : err.message);
    });
    try {
      await app.listen({ host: http.listen.host, port: http.listen.port });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') {
        const why = { EADDRINUSE: 'something else listens there', EACCES: 'this user may not use that port', EADDRNOTAVAIL: 'this machine has no such address', ENOTFOUND: 'no such host' }[code];
        throw new ConfigError(`http.listen: cannot listen on ${http.listen.host}:${http.listen.port} (${code}: ${why}); change http.listen or free the port`);
      }
      throw err;
    }
    const addr = app.server.address();
    this.bound = typeof addr === 'object' && addr ? { host: http.listen.host, port: addr.port } : { ...http.listen };
    this.log.info({ listen: `${this.bound.host}:${this.bound.port}` }, `HTTP server listening on ${this.bound.host}:${this.bound.port} (/healthz, /readyz, /metrics, the console at /)`);
  }

  /** The three unauthenticated endpoints; nothing in them names a person. */
  private monitoring(app: FastifyInstance): void {
    app.get('/healthz', async (_req, reply) => reply.type('text/plain; charset=utf-8').send('ok\n'));
    app.get('/readyz', async (_req, reply) => {
      const reasons: string[] = [];
      if (!this.deps.daemon.isReady) reasons.push('the scheduler is not running (starting up or stopping)');
      try {
        await withTimeout(this.deps.store.schema.version(), READY_TIMEOUT_MS); // a real query, on either store
      } catch (err) {
        reasons.push(`the ${this.deps.store.kind} store is not reachable (${(err as { code?: string }).code ?? (err instanceof TimeoutError ? 'timed out' : 'error')})`);
      }
      return reply
        .code(reasons.length ? 503 : 200)
        .type('text/plain; charset=utf-8')
        .send(reasons.length ? `not ready: ${reasons.join('; ')}\n` : 'ready\n');
    });
    app.get('/metrics', async (_req, reply) => {
      try {
        const text = await this.metrics.scrape();
        return reply.type(this.metrics.contentType).send(text);
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, `metrics: ${errorMessage(err)}`);
        return reply.code(503).type('text/plain; charset=utf-8').send('metrics unavailable: the store is not reachable\n');
      }
    });
  }

  private errorPage(req: FastifyRequest, reply: FastifyReply, status: number, message: string) {
    const user = req.user ?? null;
    return reply
      .code(status)
      .type('text/html; charset=utf-8')
      .send(renderPage('error', { title: status === 404 ? 'Not found' : status === 403 ? 'Not allowed' : 'Error', status, message }, user));
  }
}

class TimeoutError extends Error {}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new TimeoutError('timed out')), ms)))]).finally(() => clearTimeout(timer));
}
