// Action proxy for `nodejs:20` actions: OpenWhisk's /init + /run protocol over HTTP.
// Runs inside the sandbox on Node's built-in modules only. The invoker starts it as
// `node node_runtime.js --port-fd N` and reads the listening port from that descriptor.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const vm = require('vm');
const { createRequire } = require('module');

const SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX';
const NOT_A_DICTIONARY = 'The action did not return a dictionary.';
const NOT_JSON = 'The action returned a value that is not valid JSON: ';
const TOO_DEEP = 'The action returned a value that is nested too deeply to encode as JSON.';
const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

class InitError extends Error {}

// The loaded entry point; null until a successful /init.
let entry = null;
let initializing = false;

// Writes to pipes are synchronous on Linux, so the sentinel follows all user output.
function writeSentinels() {
  process.stdout.write(SENTINEL + '\n');
  process.stderr.write(SENTINEL + '\n');
}

// Environment values as OpenWhisk passes them: null is empty, the rest JSON.
function envText(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function describe(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

function syntaxLine(err, code) {
  // vm reports "<file>:<line>" as the first line of a SyntaxError's stack.
  const match = /^[^\n]*:(\d+)\n/.exec(String(err.stack || ''));
  if (!match) return '';
  // Past the last line means the parser ran into the wrapper: the code is unfinished.
  const lines = code.split('\n').length;
  return Number(match[1]) > lines ? ' (at the end of the code)' : ` (line ${match[1]})`;
}

function loadAction(value) {
  const code = value.code;
  if (typeof code !== 'string' || code.length === 0) {
    throw new InitError('The action has no code to initialize.');
  }
  if (value.binary) {
    // DIVERGENCE(openwhisk): zipped Node.js actions need an unzip library; Node has none built in.
    throw new InitError('Binary (zip) actions are not supported for nodejs:20.');
  }
  const entryName = value.main || 'main';
  if (!IDENTIFIER.test(entryName)) {
    throw new InitError(`The entry point '${entryName}' is not a valid function name.`);
  }

  // Env first: the code may read it while it loads.
  const env = value.env && typeof value.env === 'object' ? value.env : {};
  for (const [key, val] of Object.entries(env)) process.env[key] = envText(val);

  // A CommonJS-style wrapper on the code's first line keeps line numbers true. It also
  // hands back a top-level `function main` that was never exported.
  const filename = path.resolve('action.js');
  const source =
    '(function (exports, require, module, __filename, __dirname) {' + code +
    `\n;return typeof ${entryName} === 'function' ? ${entryName} : undefined;\n})`;
  let script;
  try {
    script = new vm.Script(source, { filename });
  } catch (err) {
    throw new InitError(`The action failed to compile: ${describe(err)}${syntaxLine(err, code)}`);
  }

  const mod = { exports: {} };
  let topLevel;
  try {
    const wrapper = script.runInThisContext();
    topLevel = wrapper.call(mod.exports, mod.exports, createRequire(filename), mod,
      filename, path.dirname(filename));
  } catch (err) {
    console.error(err && err.stack ? err.stack : String(err));
    throw new InitError(`The action failed during initialization: ${describe(err)}`);
  }

  const exported = mod.exports;
  if (exported && typeof exported[entryName] === 'function') return exported[entryName];
  if (typeof exported === 'function' && entryName === 'main') return exported;
  if (typeof topLevel === 'function') return topLevel;
  throw new InitError(`The action code does not define a function named '${entryName}'.`);
}

async function runAction(body) {
  for (const [key, val] of Object.entries(body)) {
    if (key !== 'value') process.env['__OW_' + key.toUpperCase()] = envText(val);
  }
  const params = body.value === undefined ? {} : body.value;

  let result;
  try {
    result = await entry(params);
  } catch (err) {
    if (err instanceof Error || err === undefined || err === null) {
      console.error(err && err.stack ? err.stack : String(err));
      return [502, JSON.stringify({ error: `An error has occurred: ${describe(err)}` })];
    }
    // A rejected plain value is the action's own error: an application error.
    const isErrorObject = typeof err === 'object' && 'error' in err;
    return encodeResult(isErrorObject ? err : { error: err });
  }
  return encodeResult(result);
}

// [status, JSON text] for what the action produced: a JSON object or array, else why not.
function encodeResult(result) {
  if (result === null || typeof result !== 'object') {
    return [502, JSON.stringify({ error: NOT_A_DICTIONARY })];
  }
  let text;
  try {
    text = JSON.stringify(result);
  } catch (err) {
    // RangeError: the call stack ran out; TypeError: a BigInt or a circular structure.
    const error = err instanceof RangeError ? TOO_DEEP
      : NOT_JSON + String(err && err.message).split('\n')[0];
    return [502, JSON.stringify({ error })];
  }
  // toJSON() may turn the object into a scalar (or into nothing at all).
  if (text === undefined || (text[0] !== '{' && text[0] !== '[')) {
    return [502, JSON.stringify({ error: NOT_A_DICTIONARY })];
  }
  return [200, text];
}

function reply(res, status, body) {
  sendText(res, status, JSON.stringify(body));
}

function sendText(res, status, payload) {
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

function handleInit(body, res) {
  if (entry !== null || initializing) {
    reply(res, 403, { error: 'Cannot initialize the action more than once.' });
    return;
  }
  initializing = true;
  try {
    const value = body.value && typeof body.value === 'object' ? body.value : {};
    entry = loadAction(value);
    // On success the init output belongs to the first activation: no sentinels.
    reply(res, 200, { ok: true });
  } catch (err) {
    const message = err instanceof InitError ? err.message
      : `The action failed during initialization: ${describe(err)}`;
    writeSentinels();
    reply(res, 502, { error: message });
  } finally {
    initializing = false;
  }
}

async function handleRun(body, res) {
  if (entry === null) {
    writeSentinels();
    reply(res, 403, { error: 'Cannot invoke an uninitialized action.' });
    return;
  }
  const [status, text] = await runAction(body);
  writeSentinels();
  sendText(res, status, text);
}

function handle(req, res) {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    } catch (err) {
      reply(res, 400, { error: `The request is not valid JSON: ${err.message}` });
      return;
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      reply(res, 400, { error: 'The request must be a JSON object.' });
      return;
    }
    if (req.method === 'POST' && req.url === '/init') {
      handleInit(body, res);
    } else if (req.method === 'POST' && req.url === '/run') {
      handleRun(body, res).catch((err) => reply(res, 502, { error: describe(err) }));
    } else {
      reply(res, 404, { error: `Unknown path ${req.url}.` });
    }
  });
}

function main(argv) {
  const at = argv.indexOf('--port-fd');
  if (at < 0) {
    console.error('usage: node node_runtime.js --port-fd N');
    process.exit(2);
  }
  const portFd = Number(argv[at + 1]);

  // A stray async error in user code must not take down the container's other work.
  process.on('uncaughtException', (err) => console.error('Uncaught exception:', err));
  process.on('unhandledRejection', (err) => console.error('Unhandled rejection:', err));

  const server = http.createServer(handle);
  // Activations may run for many minutes; Node's default request timeouts must not cut them.
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.timeout = 0;
  server.listen(0, '127.0.0.1', () => {
    // The port goes over the inherited descriptor, never stdout (that is user output).
    fs.writeSync(portFd, `${server.address().port}\n`);
    fs.closeSync(portFd);
  });
}

main(process.argv.slice(2));
