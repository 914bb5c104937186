// Structured logs with pino: JSON for machines, readable lines on a terminal. Every log line
// of a run carries the tenant and the run id (child loggers), so one district's night can be
// read on its own. Secrets are redacted by key, whatever the caller passes.
import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';

// pino-pretty is loaded only for a terminal: a service logging JSON never pays for it.
const requireCjs = createRequire(import.meta.url);

export type { Logger };

export interface LogSettings {
  level: string;
  format: 'auto' | 'pretty' | 'json';
}

const REDACT = ['password', 'passphrase', '*.password', '*.passphrase', 'sftp.password', 'privateKey', '*.privateKey', 'html', 'text', 'attachments'];

export function createLogger(settings: LogSettings, destination: NodeJS.WritableStream = process.stderr): Logger {
  const usePretty = settings.format === 'pretty' || (settings.format === 'auto' && (destination as { isTTY?: boolean }).isTTY === true);
  const options = { level: settings.level, redact: { paths: REDACT, censor: '[secret]' }, base: undefined };
  if (usePretty) {
    const pretty = requireCjs('pino-pretty') as typeof PinoPretty;
    return pino(options, pretty({ destination, colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname', singleLine: true, sync: true }));
  }
  return pino(options, pino.destination({ dest: (destination as { fd?: number }).fd ?? 2, sync: true }));
}

/** A logger that drops everything (library use, tests). */
export const silentLogger = (): Logger => pino({ level: 'silent' });
