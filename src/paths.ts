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
