// Shared by the reliability scripts in node (tests/e2e/rel_*.mjs): start `keel serve` on the tiny
// default model (CPU, dummy weights) on a free port, small raw-HTTP helpers over node:net (so
// the tests control every byte and every disconnect), and a bounded stop. Loopback only.
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

export const build = process.env.KEEL_BUILD || 'build';
export const keelBin = path.join(build, 'keel');

// Whether this build has a real `keel serve` (the placeholder prints "not built yet").
export function haveServe(bin = keelBin) {
  const r = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8', timeout: 10000 });
  return r.status === 0 && !/not built yet/.test(`${r.stdout}${r.stderr}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startServer(flags = [], { bin = keelBin, env = {} } = {}) {
  const args = ['serve', '--model', '.cache/keel-default', '--load-format', 'dummy', '--device', 'cpu',
                '--port', '0', ...flags];
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let log = '';
  const onData = (d) => { log += d.toString(); if (log.length > 4 << 20) log = log.slice(-(2 << 20)); };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r(code ?? `signal ${signal}`)));
  const deadline = Date.now() + 60000;
  let port = 0;
  while (!port) {
    const m = /listening on http:\/\/[0-9.]+:(\d+)/.exec(log);
    if (m) port = Number(m[1]);
    else if (proc.exitCode !== null) throw new Error(`keel serve exited ${proc.exitCode}:\n${log}`);
    else if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`keel serve did not start:\n${log}`); }
    else await sleep(50);
  }
  return {
    port, proc, exited,
    url: `http://127.0.0.1:${port}`,
    log: () => log,
    // Sends the signal and waits at most `secs` seconds for the exit code (then SIGKILL, null).
    async stop(signal = 'SIGTERM', secs = 20) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const t = sleep(secs * 1000).then(() => null);
      const code = await Promise.race([exited, t]);
      if (code === null) { proc.kill('SIGKILL'); await exited; }
      return code;
    },
  };
}

// One raw connection. send() writes bytes; read helpers parse HTTP/1.1 responses in order.
export class RawConn {
  constructor(port) {
    this.sock = net.connect({ host: '127.0.0.1', port });
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.error = null;
    this.waiters = [];
    this.sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    this.sock.on('close', () => { this.closed = true; this.wake(); });
    this.sock.on('error', (e) => { this.error = e; });
  }
  connected() {
    return new Promise((res, rej) => {
      if (this.sock.readyState === 'open') return res();
      this.sock.once('connect', res);
      this.sock.once('error', rej);
    });
  }
  wake() { const w = this.waiters; this.waiters = []; for (const f of w) f(); }
  wait(ms) {
    return new Promise((r) => { const t = setTimeout(r, ms); this.waiters.push(() => { clearTimeout(t); r(); }); });
  }
  send(data) { if (!this.closed) this.sock.write(data); }
  destroy() { this.sock.destroy(); }

  // Reads one response: {status, headers, body} (chunked or Content-Length or until close).
  async response(timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = parseResponse(this.buf, this.closed);
      if (r) { this.buf = this.buf.subarray(r.used); return r; }
      if (this.closed) throw new Error(`connection closed before a whole response (${this.buf.length} bytes)`);
      if (Date.now() > deadline) throw new Error(`no whole response within ${timeoutMs} ms (${this.buf.length} bytes)`);
      await this.wait(Math.max(1, deadline - Date.now()));
    }
  }
  async closedWithin(ms) {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) await this.wait(deadline - Date.now());
    return this.closed;
  }
}

// Parses one HTTP/1.1 response from buf, or null when incomplete.
export function parseResponse(buf, eof) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(head[0])}`);
  const headers = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let pos = end + 4;
  const status = Number(m[1]);
  if (status === 100) return { status, headers, body: '', used: pos };
  if ((headers['transfer-encoding'] || '').toLowerCase().includes('chunked')) {
    const parts = [];
    for (;;) {
      const le = buf.indexOf('\r\n', pos);
      if (le < 0) return null;
      const size = parseInt(buf.subarray(pos, le).toString('latin1'), 16);
      if (Number.isNaN(size)) throw new Error('bad chunk size');
      if (buf.length < le + 2 + size + 2) return null;
      parts.push(buf.subarray(le + 2, le + 2 + size));
      pos = le + 2 + size + 2;
      if (size === 0) return { status, headers, body: Buffer.concat(parts).toString('utf8'), used: pos };
    }
  }
  if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    if (buf.length < pos + n) return null;
    return { status, headers, body: buf.subarray(pos, pos + n).toString('utf8'), used: pos + n };
  }
  if (!eof) return null;
  return { status, headers, body: buf.subarray(pos).toString('utf8'), used: buf.length };
}

// One request on a fresh connection; resolves to the response (and closes).
export async function request(port, method, p, body = null, { headers = {}, timeoutMs = 20000 } = {}) {
  const c = new RawConn(port);
  await c.connected();
  const b = body === null ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  let h = `${method} ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  if (b) h += `Content-Type: application/json\r\nContent-Length: ${b.length}\r\n`;
  c.send(h + '\r\n');
  if (b) c.send(b);
  try { return await c.response(timeoutMs); } finally { c.destroy(); }
}

// The KV pool and request counts from /v1/memory.
export async function memory(port) {
  const r = await request(port, 'GET', '/v1/memory');
  if (r.status !== 200) throw new Error(`/v1/memory answered ${r.status}`);
  return JSON.parse(r.body);
}

export function percentile(xs, p) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
