// A real SMTP server on a free loopback port, for tests: plain SMTP, no TLS, any sender and
// recipient, every accepted message kept raw. rejectNext(n) answers 451 to the next n
// messages, to play a mail server having trouble without taking it down.
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export interface ReceivedMessage {
  from: string;
  to: string[];
  raw: Buffer;
}

export interface TestSmtpServer {
  port: number;
  url: string;
  messages: ReceivedMessage[];
  /** Answers the next n messages with `code` (451: try later; 550: refused for good). */
  rejectNext(n: number, code?: number): void;
  stop(): Promise<void>;
}

/** `port`: listen on this port (to bring a server back where a stopped one was); default a free one. */
export async function startTestSmtpServer(opts: { port?: number } = {}): Promise<TestSmtpServer> {
  const messages: ReceivedMessage[] = [];
  let reject = 0;
  let rejectCode = 451;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    closeTimeout: 1000, // stop() must not wait 30 s for a client that keeps its connection
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', callback);
      stream.on('end', () => {
        if (reject > 0) {
          reject--;
          return callback(Object.assign(new Error(rejectCode >= 500 ? 'Mailbox unavailable (test server)' : 'Try again later (test server)'), { responseCode: rejectCode }));
        }
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        messages.push({ from, to: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks) });
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    messages,
    rejectNext(n: number, code = 451) {
      reject = n;
      rejectCode = code;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
