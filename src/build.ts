// The build's step after tsc (`npm run build`): what is made once from the package's own files
// rather than by every command at its start.
import { writeConfigValidator } from './config-validator.js';

const file = writeConfigValidator();
process.stdout.write(`build: the configuration's validator, precompiled, is in ${file}\n`);
