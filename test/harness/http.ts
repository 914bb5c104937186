/**
 * Talking to the daemon's HTTP server from tests: plain requests (from a chosen local address, to
 * play a proxy or a stranger), a cookie jar per client, the console's forms and their CSRF
 * tokens, and Prometheus' text format parsed into samples.
 */
import http from 'node:http';

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  setCookies: string[];
}

export class HttpClient {
  /** name -> value, as a browser would send them back. */
  readonly cookies = new Map<string, string>();

  constructor(
    readonly base: string,
    private readonly opts: { localAddress?: string; headers?: Record<string, string> } = {},
  ) {}

  get(path: string, headers: Record<string, string> = {}): Promise<HttpResult> {
    return this.request('GET', path, undefined, headers);
  }

  /** A form POST (application/x-www-form-urlencoded). */
  post(path: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<HttpResult> {
    return this.request('POST', path, new URLSearchParams(form).toString(), { 'content-type': 'application/x-www-form-urlencoded', ...headers });
  }

  /** The CSRF token of the first form on a page. */
  async csrf(path: string): Promise<string> {
    const page = await this.get(path);
    const m = /name="_csrf" value="([^"]+)"/.exec(page.text);
    if (!m) throw new Error(`no CSRF token on ${path} (${page.status}): ${page.text.slice(0, 300)}`);
    return m[1];
  }

  /** Signs in through the form; resolves with the answer to the POST. */
  async login(username: string, password: string): Promise<HttpResult> {
    const token = await this.csrf('/login');
    return this.post('/login', { _csrf: token, username, password, next: '/' });
  }

  request(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<HttpResult> {
    const url = new URL(path, this.base);
    const cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    return new Promise((resolve, reject) => {
      const req = http.request(
        url,
        {
          method,
          localAddress: this.opts.localAddress,
          headers: { ...this.opts.headers, ...headers, ...(cookie ? { cookie } : {}), ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
          agent: false,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (text += d));
          res.on('end', () => {
            const setCookies = res.headers['set-cookie'] ?? [];
            for (const c of setCookies) {
              const [pair, ...attrs] = c.split(';');
              const i = pair.indexOf('=');
              const name = pair.slice(0, i).trim();
              const value = pair.slice(i + 1).trim();
              const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a) || /^\s*expires=Thu, 01 Jan 1970/i.test(a));
              if (expired || value === '') this.cookies.delete(name);
              else this.cookies.set(name, value);
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, setCookies });
          });
        },
      );
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  }
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus' text exposition format: the samples, and each metric's TYPE. */
export function parsePrometheus(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      types.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1], labels, value: m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]) });
  }
  return { samples, types };
}

/** The value of one sample (undefined when absent). */
export function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}
