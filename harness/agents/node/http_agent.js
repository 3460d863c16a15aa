#!/usr/bin/env node
// The connformance http-client agent for Node.js's http.Agent (SPEC.md §4.4).
//
//   node http_agent.js --url URL[,URL2] [--url URL3] --plan PLAN.json [--knob-name value ...]
//
// A thin adapter over one http.Agent built with the options of Node's own http.globalAgent
// (keepAlive: true, timeout: 5000 since Node 19) plus the plan's knobs; the pool under test is
// Node's (lib/_http_agent.js). Knobs, from the plan's "knobs" or flags (flags win):
//
//   max_conns_per_host -> maxSockets (per origin; default Infinity; 0 = no limit)
//   max_idle_per_host  -> maxFreeSockets (per origin; default 256; >= 1)
//   idle_timeout_ms    -> timeout: a free socket is destroyed when it has been idle this long (a
//                         server's "Keep-Alive: timeout=N" lowers it to N - 1 s for that socket)
//   keepalive          -> keepAlive (false: every request says Connection: close)
//   block_when_full    -> true only: requests over maxSockets wait in the agent's queue
//   read_error_body    -> read (true, default) or leave unread (false) the body of a >= 400
//                         response; unread, the socket is never freed
//   max_idle_total     -> unsupported (maxTotalSockets caps all sockets, not idle ones)
//
// Records: "reused" is request.reusedSocket, "local_port" the socket's localPort. cancel_burst
// aborts the request (AbortController) after cancel_after_ms; a phase's "timeout_ms" destroys a
// request whose socket is inactive that long (the request's timeout option); absent, none.
// Unsupported knobs print {"unsupported": [...], "detail": {...}} and exit 3; a bad command line
// or plan exits 2. Only loopback (127.0.0.0/8) and harness namespace (198.18.0.0/15) hosts.
'use strict';

const fs = require('fs');
const http = require('http');

const EXIT_USAGE = 2;
const EXIT_UNSUPPORTED = 3;
const KNOBS = ['max_conns_per_host', 'max_idle_per_host', 'max_idle_total', 'idle_timeout_ms',
  'keepalive', 'block_when_full', 'read_error_body'];
const OPS = ['burst', 'sequential', 'sleep', 'cancel_burst', 'spread_burst'];
const GLOBAL_AGENT_DEFAULTS = { keepAlive: true, timeout: 5000 }; // Node >= 19's http.globalAgent

class UsageError extends Error {}

function usage(message) {
  process.stderr.write(`http_agent.js: ${message}\n`);
  process.exit(EXIT_USAGE);
}

function parseArgs(argv) {
  const urls = [];
  const flagKnobs = {};
  let plan = null;
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new UsageError(`flag ${flag} needs a value`);
    if (flag === '--url') {
      urls.push(...value.split(',').map((u) => u.trim()).filter(Boolean));
    } else if (flag === '--plan') {
      plan = value;
    } else if (flag.startsWith('--') && KNOBS.includes(flag.slice(2).replace(/-/g, '_'))) {
      flagKnobs[flag.slice(2).replace(/-/g, '_')] = knobFromText(value);
    } else {
      throw new UsageError(`unknown flag ${flag}`);
    }
  }
  if (!urls.length || plan === null) {
    throw new UsageError('usage: http_agent.js --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]');
  }
  return { urls, plan, flagKnobs };
}

function knobFromText(text) {
  if (text === 'true' || text === 'false') return text === 'true';
  if (/^-?\d+$/.test(text)) return Number(text);
  return text;
}

function checkHost(url) {
  const host = new URL(url).hostname;
  const octets = host.split('.').map(Number);
  const dotted = octets.length === 4 && octets.every((o) => Number.isInteger(o) && o >= 0 && o <= 255);
  if (!dotted || !(octets[0] === 127 || (octets[0] === 198 && (octets[1] === 18 || octets[1] === 19)))) {
    throw new UsageError(`${url}: only 127.0.0.0/8 and 198.18.0.0/15 addresses (no names) are allowed`);
  }
}

function intKnob(name, value, min) {
  if (!Number.isInteger(value) || value < min) throw new UsageError(`${name}: expected an integer >= ${min}, got ${value}`);
  return value;
}

function boolKnob(name, value) {
  if (typeof value !== 'boolean') throw new UsageError(`${name}: expected true or false, got ${value}`);
  return value;
}

/** The agent options for the knobs, and the knobs Node cannot honour (with why). */
function configure(knobs) {
  const options = { ...GLOBAL_AGENT_DEFAULTS };
  const unsupported = {};
  let readErrorBody = true;
  for (const [name, value] of Object.entries(knobs)) {
    switch (name) {
      case 'max_conns_per_host': {
        const n = intKnob(name, value, 0);
        options.maxSockets = n === 0 ? Infinity : n;
        break;
      }
      case 'max_idle_per_host':
        if (intKnob(name, value, 0) === 0) {
          unsupported[name] = 'maxFreeSockets must be >= 1; to keep no idle socket, turn keepAlive off';
        } else {
          options.maxFreeSockets = value;
        }
        break;
      case 'idle_timeout_ms':
        options.timeout = intKnob(name, value, 1);
        break;
      case 'keepalive':
        options.keepAlive = boolKnob(name, value);
        break;
      case 'block_when_full':
        if (!boolKnob(name, value)) unsupported[name] = 'http.Agent always queues requests over maxSockets';
        break;
      case 'read_error_body':
        readErrorBody = boolKnob(name, value);
        break;
      case 'max_idle_total':
        unsupported[name] = 'http.Agent has no pool-wide idle cap (maxTotalSockets caps all sockets, busy or free)';
        break;
      default:
        unsupported[name] = 'not a knob of the agent contract';
    }
  }
  return { options, unsupported, readErrorBody };
}

function parsePhases(raw, nurls) {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new UsageError('plan.phases: expected a list');
  return raw.map((p, idx) => {
    const where = `plan.phases[${idx}]`;
    const known = ['op', 'n', 'path', 'method', 'body', 'target', 'targets', 'ms', 'cancel_after_ms', 'timeout_ms'];
    for (const key of Object.keys(p)) if (!known.includes(key)) throw new UsageError(`${where}: unknown key ${key}`);
    if (!OPS.includes(p.op)) throw new UsageError(`${where}: op must be ${OPS.join(', ')}, got ${p.op}`);
    const phase = { op: p.op, n: p.n || 0, path: p.path || '', method: p.method || 'GET', body: p.body ?? null,
      target: p.target || 0, targets: p.targets || [], ms: p.ms || 0, cancelAfterMs: p.cancel_after_ms || 0,
      timeoutMs: p.timeout_ms || 0 };
    if (!Array.isArray(phase.targets) || (p.op === 'spread_burst' && !phase.targets.length)) {
      throw new UsageError(`${where}: spread_burst needs a non-empty targets list`);
    }
    for (const t of phase.targets.length ? phase.targets : [phase.target]) {
      if (!Number.isInteger(t) || t < 0 || t >= nurls) throw new UsageError(`${where}: target ${t} is not an index of the ${nurls} --url value(s)`);
    }
    return phase;
  });
}

function emit(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

function nowMs() {
  return performance.timeOrigin + performance.now();
}

/** One request: resolves with {status, error, reused, local_port}; never rejects. */
function request(agent, readErrorBody, base, phase) {
  const url = base.replace(/\/+$/, '') + '/' + phase.path.replace(/^\/+/, '');
  return new Promise((resolve) => {
    const out = { status: null, error: null, reused: null, local_port: null };
    let settled = false;
    const finish = (error) => {
      if (settled) return;
      settled = true;
      if (error) out.error = error;
      resolve(out);
    };
    const controller = new AbortController();
    let cancelTimer = null;
    if (phase.op === 'cancel_burst') {
      cancelTimer = setTimeout(() => {
        controller.abort();
        finish(`canceled: after ${phase.cancelAfterMs} ms`);
      }, phase.cancelAfterMs);
    }
    const options = { method: phase.method, agent, signal: controller.signal };
    // The request's timeout option arms the socket's inactivity timer before it connects;
    // req.setTimeout() alone waits for the connect (Node's docs), so a SYN never answered would
    // be bounded only by the agent's own 5 s.
    if (phase.timeoutMs > 0) options.timeout = phase.timeoutMs;
    const req = http.request(url, options, (res) => {
      out.status = res.statusCode;
      out.reused = req.reusedSocket;
      out.local_port = res.socket ? res.socket.localPort ?? null : null;
      if (res.statusCode >= 400 && !readErrorBody) {
        res.pause(); // never read: the socket stays busy, as in an application that forgot the body
        clearTimeout(cancelTimer);
        finish(null);
        return;
      }
      res.resume();
      res.on('end', () => { clearTimeout(cancelTimer); finish(null); });
      res.on('error', (e) => finish(`${e.code || e.name}: ${e.message}`));
    });
    req.on('socket', (socket) => {
      const note = () => { out.local_port = socket.localPort ?? out.local_port; };
      if (socket.connecting) socket.once('connect', note); else note();
    });
    if (phase.timeoutMs > 0) {
      req.on('timeout', () => req.destroy(new Error(`timeout: no activity for ${phase.timeoutMs} ms`)));
    }
    req.on('error', (e) => { clearTimeout(cancelTimer); finish(`${e.code || e.name}: ${e.message}`); });
    if (phase.body !== null) req.write(phase.body);
    req.end();
  });
}

async function runPhase(agent, readErrorBody, urls, idx, phase) {
  const one = async (i) => {
    const start = nowMs();
    const target = phase.targets.length ? phase.targets[i % phase.targets.length] : phase.target;
    const r = await request(agent, readErrorBody, urls[target], phase);
    emit({ phase: idx, i, start_ms: start, end_ms: nowMs(), ...r });
  };
  if (phase.op === 'sleep') {
    await new Promise((resolve) => setTimeout(resolve, phase.ms));
  } else if (phase.op === 'sequential') {
    for (let i = 0; i < phase.n; i++) await one(i);
  } else { // burst, cancel_burst, spread_burst: n requests issued together
    await Promise.all(Array.from({ length: phase.n }, (_, i) => one(i)));
  }
}

async function main() {
  let args;
  let plan;
  try {
    args = parseArgs(process.argv.slice(2));
    args.urls.forEach(checkHost);
    plan = JSON.parse(fs.readFileSync(args.plan, 'utf8'));
    for (const key of Object.keys(plan)) if (key !== 'knobs' && key !== 'phases') throw new UsageError(`plan: unknown key ${key} (knobs, phases)`);
  } catch (e) {
    usage(e.message);
  }
  const knobs = { ...(plan.knobs || {}), ...args.flagKnobs };
  for (const k of Object.keys(knobs)) if (knobs[k] === null) delete knobs[k];
  let config;
  let phases;
  try {
    config = configure(knobs);
    phases = parsePhases(plan.phases, args.urls.length);
  } catch (e) {
    usage(e.message);
  }
  const unsupported = Object.keys(config.unsupported).sort();
  if (unsupported.length) {
    emit({ unsupported, detail: config.unsupported });
    process.exit(EXIT_UNSUPPORTED);
  }
  const agent = new http.Agent(config.options);
  process.stderr.write(`http_agent.js: node ${process.version} http.Agent ${JSON.stringify(config.options)}\n`);
  for (let idx = 0; idx < phases.length; idx++) await runPhase(agent, config.readErrorBody, args.urls, idx, phases[idx]);
  emit({ done: true });
  process.exit(0);
}

main();
