import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfigValidator, PRECOMPILED_FILE, writeConfigValidator } from '../src/config-validator.js';
import { packageRoot } from '../src/paths.js';
import { parseYaml } from '../src/yaml.js';

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** config.example.yaml as the schema sees it (its ${NAME} references left as they are: strings). */
const example = (): Raw => parseYaml(fs.readFileSync(path.join(packageRoot(), 'config.example.yaml'), 'utf8')) as Raw;

/** Configurations the schema passes and refuses, each for a different keyword. */
function cases(): Record<string, unknown> {
  const c: Record<string, Raw> = {};
  c.valid = example();
  c.unknownKey = { ...example(), databse: 'x.db' };
  c.noDatabase = example();
  delete c.noDatabase.database;
  c.upperCaseTenant = example();
  c.upperCaseTenant.tenants.Lincoln = c.upperCaseTenant.tenants['lincoln-usd'];
  c.badHostKey = example();
  c.badHostKey.tenants['lincoln-usd'].sftp.hostKey = 'MD5:ab:cd';
  c.badEmail = example();
  c.badEmail.tenants['lincoln-usd'].notify.to = ['it@lincoln.example', 'not an address'];
  c.badEnum = example();
  c.badEnum.tenants['lincoln-usd'].notify.when = 'sometimes';
  c.wrongTypes = { database: 42, tenants: [] };
  return c;
}

describe('the configuration validator, precompiled by the build', () => {
  const dirs: string[] = [];
  // Inside the package, as dist is: the code requires ajv's runtime helpers from node_modules.
  const tempDir = () => {
    const cache = path.join(packageRoot(), 'node_modules', '.cache');
    fs.mkdirSync(cache, { recursive: true });
    const d = fs.mkdtempSync(path.join(cache, 'provisioner-validator-test-'));
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it('passes and refuses what the schema compiled at run time does, with the same errors', () => {
    const dir = tempDir();
    writeConfigValidator(dir);
    const code = loadConfigValidator(dir);
    const compiled = loadConfigValidator(tempDir()); // nothing precompiled there
    expect(code.precompiled).toBe(true);
    expect(compiled.precompiled).toBe(false);
    let refused = 0;
    for (const [name, value] of Object.entries(cases())) {
      const ok = compiled.validate(value);
      expect(code.validate(value), name).toBe(ok);
      expect(code.validate.errors ?? null, name).toEqual(compiled.validate.errors ?? null);
      if (!ok) refused++;
    }
    expect(refused).toBe(Object.keys(cases()).length - 1); // all but the example itself
  });

  it('is not used when it was made from another version of the schema: the schema is compiled instead', () => {
    const dir = tempDir();
    const file = writeConfigValidator(dir);
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/schemaSha256 = "[0-9a-f]+"/, `schemaSha256 = "${'0'.repeat(64)}"`));
    const v = loadConfigValidator(dir);
    expect(v.precompiled).toBe(false);
    expect(v.validate(cases().valid)).toBe(true);
    expect(v.validate(cases().badHostKey)).toBe(false);
  });

  it('is in dist after `npm run build`, made from the schema as it is now', () => {
    const dist = path.join(packageRoot(), 'dist', 'src');
    expect(fs.existsSync(path.join(dist, PRECOMPILED_FILE)), 'npm run build makes it (the test command builds first)').toBe(true);
    expect(loadConfigValidator(dist).precompiled).toBe(true);
  });
});
