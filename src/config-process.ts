// The child process of parseConfig (config.ts) for a large configuration: the YAML on standard
// input, the file's path as the argument, the environment its own; the loaded configuration (or
// its problems) as JSON on standard output (config-child.ts).
import fs from 'node:fs';
import { writeAnswer, type ChildAnswer } from './config-child.js';
import { parseConfigHere } from './config.js';
import { ConfigError } from './errors.js';

let answer: ChildAnswer;
try {
  answer = { config: parseConfigHere(fs.readFileSync(0, 'utf8'), process.argv[2], process.env) };
} catch (err) {
  answer = err instanceof ConfigError ? { summary: err.summary, problems: err.problems } : { failed: String((err as Error)?.message ?? err) };
}
// Writes to a pipe are synchronous on Linux and macOS: the answer is out when the child exits.
writeAnswer((chunk) => process.stdout.write(chunk), answer);
