#!/usr/bin/env node
// The connformance http-server launcher for Node.js's http server (SPEC.md §4.5 paths).
//
//   node http_server.js --host 127.0.0.1 --port 8080 [--keep-alive-timeout-ms N]
//        [--headers-timeout-ms N] [--max-requests-per-socket N]
//
// A thin program over http.createServer: the connection handling under test is Node's own
// (lib/_http_server.js). Paths: /sleep?ms=N (answer after N ms), /status/<code> (answer with
// that status), /bytes?n=N (N bytes with a Content-Length), / (200); anything else 404.
// Knobs (absent: Node's defaults):
//
//   --keep-alive-timeout-ms    server.keepAliveTimeout (default 5000; 0 = no idle limit)
//   --headers-timeout-ms       server.headersTimeout (default 60000)
//   --max-requests-per-socket  server.maxRequestsPerSocket (default 0 = no limit)
//
// Node answers keep-alive requests with "Keep-Alive: timeout=<keepAliveTimeout in s>". Listens
// only on loopback (127.0.0.0/8) or a harness namespace address (198.18.0.0/15); prints
// "http_server.js: listening on HOST:PORT" once accepting. SIGTERM/SIGINT: exits at once.
'use strict';

const http = require('http');

function fail(message) {
  process.stderr.write(`http_server.js: ${message}\n`);
  process.exit(2);
}

const args = { host: '127.0.0.1', port: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const flag = argv[i];
  const value = argv[i + 1];
  if (value === undefined) fail(`flag ${flag} needs a value`);
  if (flag === '--host') args.host = value;
  else if (['--port', '--keep-alive-timeout-ms', '--headers-timeout-ms', '--max-requests-per-socket'].includes(flag)) {
    if (!/^\d+$/.test(value)) fail(`${flag}: expected an integer >= 0, got ${value}`);
    args[flag.slice(2)] = Number(value);
  } else fail(`unknown flag ${flag}`);
}
const octets = args.host.split('.').map(Number);
if (octets.length !== 4 || !(octets[0] === 127 || (octets[0] === 198 && (octets[1] === 18 || octets[1] === 19)))) {
  fail(`--host ${args.host}: only 127.0.0.0/8 and 198.18.0.0/15 addresses are allowed`);
}

function answer(req, res) {
  const url = new URL(req.url, 'http://x');
  let status = 200;
  let body = 'ok\n';
  const intParam = (name) => (/^\d+$/.test(url.searchParams.get(name) || '') ? Number(url.searchParams.get(name)) : null);
  const send = () => {
    if (status === 204 || status === 304) {
      res.writeHead(status).end();
      return;
    }
    res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };
  if (url.pathname === '/') {
    send();
  } else if (url.pathname === '/sleep') {
    const ms = intParam('ms');
    if (ms === null) { status = 400; body = 'ms must be an integer >= 0\n'; send(); return; }
    body = `slept ${ms} ms\n`;
    setTimeout(send, ms);
  } else if (url.pathname.startsWith('/status/')) {
    const code = Number(url.pathname.slice('/status/'.length));
    if (!Number.isInteger(code) || code < 200 || code > 599) { status = 400; body = 'status must be 200..599\n'; } else { status = code; body = `status ${code}\n`; }
    send();
  } else if (url.pathname === '/bytes') {
    const n = intParam('n');
    if (n === null) { status = 400; body = 'n must be an integer >= 0\n'; } else body = 'x'.repeat(n);
    send();
  } else {
    status = 404; body = 'not found\n'; send();
  }
}

const server = http.createServer(answer);
if (args['keep-alive-timeout-ms'] !== undefined) server.keepAliveTimeout = args['keep-alive-timeout-ms'];
if (args['headers-timeout-ms'] !== undefined) server.headersTimeout = args['headers-timeout-ms'];
if (args['max-requests-per-socket'] !== undefined) server.maxRequestsPerSocket = args['max-requests-per-socket'];
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
server.on('error', (e) => { process.stderr.write(`http_server.js: ${e.message}\n`); process.exit(1); });
server.listen(args.port, args.host, () => {
  const a = server.address();
  process.stdout.write(`http_server.js: listening on ${a.address}:${a.port} (node ${process.version}, keepAliveTimeout ${server.keepAliveTimeout} ms)\n`);
});
