// Shared by main.js and post.js: the action's inputs and paths. No npm
// dependencies: the action runs from its checkout as it is.
'use strict';
const os = require('os');
const path = require('path');

// input reads an action input as GitHub passes it (INPUT_<NAME>, upper case).
function input(name) {
  return (process.env['INPUT_' + name.replace(/ /g, '_').toUpperCase()] || '').trim();
}

const stateDir = path.join(process.env.RUNNER_TEMP || os.tmpdir(), 'flakegate');
const client = path.join(stateDir, 'bin', 'flakegate');

function warn(msg) {
  process.stdout.write('::warning title=flakegate::' + String(msg).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A') + '\n');
}

module.exports = { input, stateDir, client, warn };
