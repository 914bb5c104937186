// The child process of parseYaml (yaml.ts) for a large text: YAML on standard input, the parsed
// value (or the parser's message) as JSON on standard output.
import fs from 'node:fs';
import { parseHere, type ChildAnswer } from './yaml.js';

let answer: ChildAnswer;
try {
  answer = { value: parseHere(fs.readFileSync(0, 'utf8')) };
} catch (err) {
  answer = { error: (err as Error).message };
}
process.stdout.write(JSON.stringify(answer));
