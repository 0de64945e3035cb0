// Runs Schemathesis (pinned, installed by scripts/setup into .venv/) against the built Worker under
// `wrangler dev`, driven by docs/api/openapi.json: every operation with generated valid and invalid
// requests, every check. Exits non-zero on any failure. Bounded in time: a fixed number of examples
// per operation and --max-time for the whole run.
//   node tests/contract/schemathesis.mjs [extra schemathesis arguments]
//   SCHEMATHESIS_MAX_EXAMPLES (default 20), SCHEMATHESIS_MAX_TIME seconds of the main run (default 100)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, RELAXED_LIMITS } from '../browser/server.mjs';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCHEMATHESIS = path.join(REPO_ROOT, '.venv', 'bin', 'schemathesis');
if (!fs.existsSync(SCHEMATHESIS)) {
  console.error(`${SCHEMATHESIS} is missing: run bash scripts/setup`);
  process.exit(1);
}

const TIME = Number(process.env.SCHEMATHESIS_MAX_TIME ?? 100);
const ADMIN_TOKEN = 'schemathesis-admin-token';

/** A new account's badge. */
async function newBadge(baseUrl, prefix) {
  const username = `${prefix}_${Date.now().toString(36)}`;
  const password = 'schemathesis password';
  const signup = await fetch(`${baseUrl}/users/`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (signup.status !== 201) throw new Error(`signup: ${signup.status} ${await signup.text()}`);
  const login = await fetch(`${baseUrl}/token`, { method: 'POST', body: new URLSearchParams({ username, password }) });
  const { access_token: badge } = await login.json();
  if (!badge) throw new Error(`login: ${login.status}`);
  return badge;
}

/** One Schemathesis run over the operations of `include` (or all but `exclude`); its exit code. */
function schemathesis(baseUrl, { header, include = [], exclude = [], maxTime }) {
  const args = [
    '--config-file', path.join(REPO_ROOT, 'tests', 'contract', 'schemathesis.toml'),
    'run', path.join(REPO_ROOT, 'docs', 'api', 'openapi.json'),
    '--url', baseUrl,
    '--header', `Authorization: ${header}`,
    '--checks', 'all',
    // No links are declared, and links inferred from the documents' own text are not requests
    // anyone makes: the stateful phase is left out.
    '--phases', 'examples,coverage,fuzzing',
    '--max-examples', process.env.SCHEMATHESIS_MAX_EXAMPLES ?? '20',
    '--max-time', String(maxTime),
    // One worker: Hypothesis describes strategies with a parser that is not thread-safe.
    '--workers', '1',
    '--seed', process.env.SCHEMATHESIS_SEED ?? '20261206',
    '--request-timeout', '20',
    ...include.flatMap((p) => ['--include-path', p]),
    ...exclude.flatMap((p) => ['--exclude-path', p]),
    ...process.argv.slice(2),
  ];
  return new Promise((resolve) => {
    const child = spawn(SCHEMATHESIS, args, { stdio: 'inherit', env: { ...process.env, SCHEMATHESIS_TELEMETRY: 'false' } });
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

// Generated signups and logins must not be throttled, and argon2 kept cheap: the run is about
// the API's answers, not about password hashing.
const server = await startServer({
  vars: { ...RELAXED_LIMITS, ARGON2_M_KIB: '256', ARGON2_T: '1', ADMIN_TOKEN },
});
let status = 1;
try {
  const badge = await newBadge(server.baseUrl, 'st_user');

  // Four runs: /logout revokes the badge it is called with, DELETE /users/me would end the account
  // (were the password ever guessed) and /rooms/{room_id}/stats takes the operators' token, so each
  // gets credentials of its own; everything else shares one badge.
  const runs = [
    {
      header: `Bearer ${badge}`,
      exclude: ['/logout', '/users/me', '/rooms/{room_id}/stats'],
      maxTime: TIME,
    },
    { header: `Bearer ${ADMIN_TOKEN}`, include: ['/rooms/{room_id}/stats'], maxTime: 20 },
    { header: `Bearer ${await newBadge(server.baseUrl, 'st_logout')}`, include: ['/logout'], maxTime: 20 },
    { header: `Bearer ${await newBadge(server.baseUrl, 'st_delete')}`, include: ['/users/me'], maxTime: 20 },
  ];
  status = 0;
  for (const run of runs) {
    const code = await schemathesis(server.baseUrl, run);
    if (code !== 0) status = code;
  }
} finally {
  await server.stop();
  if (status === 0) server.cleanup();
  else console.error(`wrangler log kept: ${server.logPath}`);
}
process.exit(status);
