// flakegate GitHub Action, main step: build the client of this action's
// ref from the action's own checkout, then `flakegate ci setup`.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { input, stateDir, client, warn } = require('./common');

function main() {
  // Not writable by the group or others whatever the runner's umask (a
  // self-hosted runner started with umask 002): setup refuses a state
  // directory others may write to (the post-build hook lives there).
  fs.mkdirSync(path.dirname(client), { recursive: true, mode: 0o711 });
  fs.chmodSync(stateDir, 0o711);
  fs.chmodSync(path.dirname(client), 0o711);
  const ldflags = process.env.GITHUB_ACTION_REF
    ? ['-ldflags', '-X github.com/flakegate/flakegate/internal/version.Version=' + process.env.GITHUB_ACTION_REF]
    : [];
  const build = spawnSync('go', ['build', '-trimpath', ...ldflags, '-o', client, './cmd/flakegate'],
    { cwd: path.join(__dirname, '..'), stdio: 'inherit' });
  if (build.status !== 0) {
    warn('could not build the flakegate client (Go missing? add actions/setup-go): the job runs without the cache');
    return 0;
  }
  const args = ['ci', 'setup', '--state-dir', stateDir, '--cache', input('cache'),
    '--push=' + (input('push') || 'true'), '--nix-conf', input('nix-conf') || 'auto'];
  for (const [flag, name] of [['--flake', 'flake'], ['--lifetime', 'lifetime'], ['--retries', 'retries'], ['--store', 'store']]) {
    if (input(name)) args.push(flag, input(name));
  }
  const setup = spawnSync(client, args, { stdio: 'inherit' });
  // 2 is bad usage (e.g. no cache input): the workflow is wrong, say so.
  // Anything else about the cache is a warning printed by setup.
  return setup.status === 2 ? 1 : 0;
}

process.exit(main());
