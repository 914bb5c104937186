// Where the shipped folders (schemas/, templates/) live, whether we run from src/ under the
// test runner or from dist/src/ after `tsc`: walk up to the package.json.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function packageRoot(): string {
  if (cached) return cached;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot find the provisioner package root');
    dir = parent;
  }
  cached = dir;
  return dir;
}

export const schemasDir = (): string => path.join(packageRoot(), 'schemas');
export const templatesDir = (): string => path.join(packageRoot(), 'templates');

/**
 * The compiled script of a worker thread next to `moduleUrl`. Under the test runner modules are
 * loaded from src/ as TypeScript, but a thread needs JavaScript: there the one in dist/ is used
 * (`npm test` builds first).
 */
export function threadScript(moduleUrl: string, file: string): URL {
  const sibling = new URL(file, moduleUrl);
  if (fs.existsSync(fileURLToPath(sibling))) return sibling;
  const rel = path.relative(packageRoot(), path.dirname(fileURLToPath(moduleUrl)));
  return new URL(`file://${path.join(packageRoot(), 'dist', rel, file)}`);
}
