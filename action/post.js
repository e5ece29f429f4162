// flakegate GitHub Action, post step (end of the job): wait for the
// background pusher and write the job summary. Never fails the job.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const { input, stateDir, client, warn } = require('./common');

if (fs.existsSync(client)) {
  const r = spawnSync(client, ['ci', 'flush', '--state-dir', stateDir, '--timeout', input('flush-timeout') || '15m'], { stdio: 'inherit' });
  if (r.error) warn('flush: ' + r.error.message);
}
process.exit(0);
