// Validates docs/api/asyncapi.json with the AsyncAPI parser (@asyncapi/parser, pinned in package.json):
// the AsyncAPI 3.0 schema plus the parser's recommended rules. Any error or warning fails.
//   node tests/contract/lint-asyncapi.mjs [file]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser } from '@asyncapi/parser';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const file = process.argv[2] ?? path.join(REPO_ROOT, 'docs', 'api', 'asyncapi.json');
const { document, diagnostics } = await new Parser().parse(fs.readFileSync(file, 'utf8'), { source: file });

// Spectral severities: 0 error, 1 warning, 2 information, 3 hint.
const problems = diagnostics.filter((d) => d.severity <= 1);
for (const d of problems) {
  console.error(`${d.severity === 0 ? 'error' : 'warning'} ${d.code} at ${d.path.join('.') || '(root)'}: ${d.message}`);
}
if (!document || problems.length > 0) {
  console.error(`${path.relative(REPO_ROOT, file)}: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`${path.relative(REPO_ROOT, file)}: valid AsyncAPI ${document.version()}, ${document.allMessages().length} messages`);
