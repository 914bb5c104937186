// `provisioner hash-password`: reads a password on standard input and prints its scrypt PHC string,
// for `http.users.<name>.passwordHash`. The password never appears on a command line (ps, shell
// history), nor on the screen when typed. One line is read; its line break is not part of it.
import { ConfigError, ExitCode } from '../errors.js';
import { hashPassword } from '../import/passwords.js';

export async function hashPasswordCommand(input: NodeJS.ReadStream = process.stdin): Promise<number> {
  const password = input.isTTY ? await typed(input) : await firstLine(input);
  if (!password) throw new ConfigError('no password on standard input: e.g. `printf %s "$PASSWORD" | provisioner hash-password`');
  process.stdout.write((await hashPassword(password)) + '\n');
  return ExitCode.ok;
}

async function firstLine(input: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) {
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    if (chunks.some((c) => c.includes(0x0a))) break;
  }
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0];
}

/** Read from a terminal without echo; Ctrl-C gives up. */
function typed(input: NodeJS.ReadStream): Promise<string> {
  process.stderr.write('Password (not shown), then Enter: ');
  input.setRawMode(true);
  input.resume();
  input.setEncoding('utf8');
  let value = '';
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      input.setRawMode(false);
      input.pause();
      input.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (s: string) => {
      for (const ch of s) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new ConfigError('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    input.on('data', onData);
  });
}
