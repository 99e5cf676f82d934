// Load and abuse on loopback, against `keel serve` on the tiny CPU model (dummy weights):
//  1. 1000 streaming clients that disconnect at random points: afterwards the KV pool must be all
//     free (and nothing running or waiting) within a second of the last disconnect;
//  2. 500 slow-loris connections (headers trickled a byte at a time) while normal requests must
//     still answer quickly; the server must drop the slow ones at header_timeout_s with a 408;
//  3. bodies past max_body_bytes (declared, streamed, chunked) get 413; one at the limit does not;
//  4. pipelined requests on one connection are answered in order;
//  5. malformed requests get a 4xx and the connection either survives or closes cleanly;
//  6. a few thousand mixed requests, then SIGTERM: exit code 0.
// Every loop is bounded and every wait has a timeout. Prints the figures (docs/RELIABILITY.md).
import fs from 'node:fs';
import {
  haveServe, keelBin, startServer, RawConn, request, memory, percentile, sleep,
} from './lib/rel_serve.mjs';

if (!haveServe()) {
  console.log('skip: keel serve is not built yet');
  process.exit(0);
}

// Under `make asan` (a sanitized keel, several times slower) the loops are a quarter as long.
const ASAN = fs.readFileSync(keelBin).includes('__asan_init');
const SCALE = ASAN ? 0.25 : 1;
const T0 = Date.now();
let failures = 0;
function check(ok, what, detail = '') {
  if (ok) console.log(`ok   ${what}`);
  else { failures++; console.log(`FAIL ${what}${detail ? `: ${detail}` : ''}`); }
}
const rnd = (n) => Math.floor(Math.random() * n);
const MAX_BODY = 65536;
const HEADER_TIMEOUT_S = 3;

const srv = await startServer([
  '--num-kv-blocks', '1024', '--max-body-bytes', String(MAX_BODY),
  '--header-timeout-s', String(HEADER_TIMEOUT_S), '--max-connections', '3000',
]);
const { port } = srv;
process.on('exit', () => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL'); });

// Sends one request on an open connection and reads its answer.
async function on(conn, method, path, body = null, extra = '') {
  const b = body === null ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  let h = `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}`;
  if (b) h += `Content-Type: application/json\r\nContent-Length: ${b.length}\r\n`;
  conn.send(b ? Buffer.concat([Buffer.from(`${h}\r\n`), b]) : `${h}\r\n`);
  return conn.response(20000);
}

async function poolIdle() {
  const m = await memory(port);
  return { idle: m.kv_pool.n_free === m.kv_pool.n_blocks && m.requests.running === 0 && m.requests.waiting === 0, m };
}

// ---- 1. streaming clients that leave at random points

async function streamingClient() {
  const c = new RawConn(port);
  try {
    await c.connected();
    const body = JSON.stringify({ prompt: `client ${rnd(1e6)} says`, max_tokens: 2 + rnd(8), stream: true, temperature: 0.8 });
    const req = `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    const mode = rnd(10);
    if (mode === 0) { c.send(req.slice(0, rnd(req.length))); await sleep(rnd(20)); return 'partial'; }
    c.send(req);
    if (mode === 1) { await sleep(rnd(30)); return 'before-answer'; }
    // Read until `leaveAfter` events (or the end), then drop the socket without a word.
    const leaveAfter = mode <= 3 ? Infinity : 1 + rnd(8);
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      const text = c.buf.toString('latin1');
      const events = (text.match(/\ndata: /g) || []).length + (text.includes('\r\n\r\ndata: ') ? 1 : 0);
      if (text.includes('data: [DONE]')) return 'done';
      if (events >= leaveAfter) return 'mid-stream';
      if (c.closed) return 'closed-by-server';
      await c.wait(deadline - Date.now());
    }
    // Say how far it got: no bytes at all means the request never started.
    const got = c.buf.toString('latin1');
    return `timeout after ${(got.match(/\ndata: /g) || []).length} events (${c.buf.length} bytes, ${mode === 2 || mode === 3 ? 'reading to the end' : 'leaving early'})`;
  } finally {
    c.destroy();
  }
}

{
  const N = Math.round(1000 * SCALE);
  const WINDOW = 64;
  const outcomes = {};
  let next = 0;
  const t = Date.now();
  await Promise.all(Array.from({ length: WINDOW }, async () => {
    while (next < N) {
      next++;
      const o = await streamingClient().catch((e) => `error ${e.code || e.message}`);
      outcomes[o] = (outcomes[o] || 0) + 1;
    }
  }));
  const lastGone = Date.now();
  let idleAfter = -1;
  let last = null;
  while (Date.now() - lastGone < 10000) {
    const p = await poolIdle();
    last = p.m;
    if (p.idle) { idleAfter = Date.now() - lastGone; break; }
    await sleep(20);
  }
  console.log(`     ${N} streaming clients in ${((lastGone - t) / 1000).toFixed(1)} s: ${JSON.stringify(outcomes)}`);
  check(!Object.keys(outcomes).some((k) => k.startsWith('error') || k.startsWith('timeout')),
    'every streaming client got its stream or left on its own', JSON.stringify(outcomes));
  check(idleAfter >= 0 && idleAfter <= 1000, `KV pool all free ${idleAfter} ms after the last disconnect (limit 1000 ms)`,
    JSON.stringify(last && { kv: last.kv_pool, requests: last.requests }));
  const h = await request(port, 'GET', '/health');
  check(h.status === 200, 'the server still answers /health after the disconnects', `${h.status}`);
}

// ---- 2. slow-loris connections while normal clients are served

{
  const N = Math.round(500 * SCALE);
  const loris = [];
  for (let i = 0; i < N; i++) {
    const c = new RawConn(port);
    loris.push(c);
  }
  await Promise.all(loris.map((c) => c.connected().catch(() => {})));
  const opened = Date.now();
  for (const c of loris) c.send('POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
  const trickle = setInterval(() => { for (const c of loris) if (!c.closed) c.send('a'); }, 250);
  // Normal clients, while the 500 hold their connections open.
  const lat = [];
  let okCount = 0;
  for (let i = 0; i < 30 && Date.now() - opened < (HEADER_TIMEOUT_S - 0.7) * 1000; i++) {
    const t = Date.now();
    const r = i % 3 === 2
      ? await request(port, 'POST', '/v1/completions', { prompt: 'quick', max_tokens: 4, temperature: 0 })
      : await request(port, 'GET', i % 3 ? '/v1/models' : '/health');
    lat.push(Date.now() - t);
    if (r.status === 200) okCount++;
  }
  const stillOpen = loris.filter((c) => !c.closed).length;
  console.log(`     with ${stillOpen} slow-loris connections open: ${lat.length} normal requests, ` +
    `p50 ${percentile(lat, 50)} ms, max ${Math.max(...lat)} ms`);
  check(stillOpen === N, `all ${N} slow-loris connections were held open during the normal requests`, `${stillOpen}`);
  check(okCount === lat.length && lat.length >= 10, `normal requests answered 200 (${okCount}/${lat.length})`);
  check(Math.max(...lat) < 1000, `every normal request under 1 s beside the slow-loris (max ${Math.max(...lat)} ms)`);
  // The server must drop them at header_timeout_s (408), not hold them forever.
  const deadline = opened + (HEADER_TIMEOUT_S + 5) * 1000;
  while (Date.now() < deadline && loris.some((c) => !c.closed)) await sleep(100);
  clearInterval(trickle);
  const closed = loris.filter((c) => c.closed).length;
  const got408 = loris.filter((c) => c.buf.toString('latin1').startsWith('HTTP/1.1 408')).length;
  const tClosed = ((Date.now() - opened) / 1000).toFixed(1);
  check(closed === N, `the server closed all ${N} slow-loris connections (${closed}) within ${tClosed} s (header_timeout_s ${HEADER_TIMEOUT_S})`);
  check(got408 === N, `each got a 408 first (${got408}/${N})`);
  for (const c of loris) c.destroy();
}

// ---- 3. bodies past the limit

{
  // Declared too large: refused from the headers alone.
  const a = new RawConn(port);
  await a.connected();
  a.send(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${MAX_BODY + 1}\r\n\r\n`);
  const ra = await a.response(5000).catch((e) => ({ status: e.message }));
  check(ra.status === 413, `Content-Length max_body_bytes + 1 -> 413 before the body is sent`, `${ra.status}`);
  check(await a.closedWithin(2000), 'and the connection is closed');
  a.destroy();
  // Declared too large with "Expect: 100-continue" (what curl sends for big bodies): a 413 and
  // no "100 Continue".
  const e = new RawConn(port);
  await e.connected();
  e.send(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${8 << 20}\r\n\r\n`);
  const re = await e.response(5000).catch((err) => ({ status: err.message }));
  check(re.status === 413, 'Expect: 100-continue with a body past the limit -> 413 (no 100 Continue)', `${re.status}`);
  e.destroy();
  // Sent for real without waiting (4 MB, and 80 KB chunked): the server must refuse and close
  // fast. The 413 itself may be lost: closing a socket with unread bytes makes the kernel send a
  // reset, which can discard the answer before the client reads it (see docs/RELIABILITY.md).
  const lost = [];
  for (const [what, head, chunk, n] of [
    ['a 4 MB body', `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${4 << 20}\r\n\r\n`, Buffer.alloc(1 << 16, 0x61), 64],
    ['an 80 KB chunked body', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', `1000\r\n${'b'.repeat(4096)}\r\n`, 20],
  ]) {
    const c = new RawConn(port);
    await c.connected();
    c.send(head);
    for (let i = 0; i < n && !c.closed; i++) { c.send(chunk); if (i % 8 === 7) await sleep(1); }
    const t = Date.now();
    const r = await c.response(5000).catch((err) => ({ status: err.message }));
    const closed = await c.closedWithin(3000);
    if (r.status !== 413) lost.push(what);
    check((r.status === 413 || /closed before/.test(String(r.status))) && closed,
      `${what} -> ${r.status === 413 ? '413' : 'connection reset (413 lost)'}, closed in ${Date.now() - t} ms`, `${r.status}`);
    c.destroy();
  }
  if (lost.length) console.log(`note: the 413 was lost to a TCP reset for: ${lost.join(', ')} (no lingering close)`);
  // Exactly at the limit: not a 413 (the body is not JSON, so 400).
  const d = await request(port, 'POST', '/v1/completions', 'x'.repeat(MAX_BODY));
  check(d.status === 400, 'a body of exactly max_body_bytes is read (400 for its content, not 413)', `${d.status}`);
}

// ---- 4. pipelined requests answered in order

{
  const c = new RawConn(port);
  await c.connected();
  const comp = JSON.stringify({ prompt: 'pipelined', max_tokens: 3, temperature: 0 });
  const tok = JSON.stringify({ prompt: 'one two three' });
  c.send('GET /health HTTP/1.1\r\nHost: x\r\n\r\n' +
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${comp.length}\r\n\r\n${comp}` +
    'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n' +
    `POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: ${tok.length}\r\n\r\n${tok}` +
    'GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n');
  const rs = [];
  for (let i = 0; i < 5; i++) rs.push(await c.response(10000).catch((e) => ({ status: e.message, body: '' })));
  const shape = (r, key) => { try { return key in JSON.parse(r.body); } catch { return false; } };
  const okOrder = rs[0].status === 200 && shape(rs[0], 'status') && rs[1].status === 200 && shape(rs[1], 'choices') &&
    rs[2].status === 200 && shape(rs[2], 'data') && rs[3].status === 200 && shape(rs[3], 'tokens') &&
    rs[4].status === 404;
  check(okOrder, '5 pipelined requests answered in order (health, completion, models, tokenize, 404)',
    rs.map((r) => `${r.status} ${String(r.body).slice(0, 40)}`).join(' | '));
  c.destroy();
}

// ---- 5. malformed requests: a 4xx, then the connection survives or closes cleanly

{
  const cases = [
    ['header line without a colon', 'GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n'],
    ['TLS hello on the plain port', Buffer.from('16030100a5010000a10303', 'hex')],
    ['bad chunk size', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'],
    ['Content-Length and chunked together', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['two Content-Lengths', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab'],
    ['headers past max_header_bytes', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'h'.repeat(70000)}\r\n\r\n`],
    ['NUL in a header', 'GET /health HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n'],
  ];
  for (const [what, bytes] of cases) {
    const c = new RawConn(port);
    await c.connected();
    c.send(bytes);
    const r = await c.response(5000).catch((e) => ({ status: e.message }));
    const closed = await c.closedWithin(2000);
    check(typeof r.status === 'number' && r.status >= 400 && r.status < 500 && closed,
      `${what}: ${r.status}, connection closed`, `status ${r.status}, closed ${closed}`);
    c.destroy();
  }
  // Well-formed HTTP with a bad JSON body: a 400 and the connection stays usable.
  const c = new RawConn(port);
  await c.connected();
  const r1 = await on(c, 'POST', '/v1/completions', '{"prompt": "x", "max_tokens": ');
  const r2 = await on(c, 'POST', '/v1/chat/completions', { messages: 'not a list' });
  const r3 = await on(c, 'GET', '/health');
  check(r1.status === 400 && JSON.parse(r1.body).error && r2.status === 400 && r3.status === 200 && !c.closed,
    `bad JSON 400, bad field 400, then /health 200 on the same connection`, `${r1.status} ${r2.status} ${r3.status}`);
  c.destroy();
}

// ---- 6. a few thousand requests, then SIGTERM and exit 0

{
  const N = Math.round(2000 * SCALE);
  const CONNS = 16;
  let next = 0;
  const statuses = {};
  const lat = [];
  const byKind = {};
  const t = Date.now();
  await Promise.all(Array.from({ length: CONNS }, async () => {
    let c = new RawConn(port);
    await c.connected();
    while (next < N) {
      const i = next++;
      const s = Date.now();
      let r;
      try {
        switch (i % 5) {
          case 0: r = await on(c, 'GET', '/health'); break;
          case 1: r = await on(c, 'GET', '/v1/models'); break;
          case 2: r = await on(c, 'POST', '/tokenize', { prompt: `request ${i}` }); break;
          case 3: r = await on(c, 'POST', '/v1/chat/completions', { messages: [{ role: 'user', content: `hi ${i}` }], max_tokens: 2 }); break;
          default: r = await on(c, 'POST', '/v1/completions', { prompt: `n ${i}`, max_tokens: 1 + (i % 3) }); break;
        }
      } catch (e) {
        r = { status: `error ${e.message}` };
        c.destroy();
        c = new RawConn(port);
        await c.connected();
      }
      statuses[r.status] = (statuses[r.status] || 0) + 1;
      lat.push(Date.now() - s);
      (byKind[i % 5] ||= []).push(Date.now() - s);
    }
    c.destroy();
  }));
  const secs = (Date.now() - t) / 1000;
  console.log(`     ${N} requests on ${CONNS} keep-alive connections in ${secs.toFixed(1)} s ` +
    `(${(N / secs).toFixed(0)} req/s), p50 ${percentile(lat, 50)} ms, p99 ${percentile(lat, 99)} ms: ${JSON.stringify(statuses)}`);
  const names = ['health', 'models', 'tokenize', 'chat', 'completion'];
  console.log(`     p50/p99 by kind (ms): ${names.map((k, j) => `${k} ${percentile(byKind[j] || [], 50)}/${percentile(byKind[j] || [], 99)}`).join(', ')}`);
  check(statuses[200] === N, `all ${N} mixed requests answered 200`, JSON.stringify(statuses));
  const p = await poolIdle();
  check(p.idle, 'KV pool all free after the load', JSON.stringify(p.m.kv_pool));
  const code = await srv.stop('SIGTERM', 20);
  check(code === 0, `SIGTERM -> exit code ${code}`);
  const errors = srv.log().split('\n').filter((l) => / (ERROR|FATAL) |Sanitizer|runtime error/.test(l));
  check(errors.length === 0, 'no error lines in the server log', errors.slice(0, 5).join('\n'));
}

console.log(`rel_abuse: ${failures ? `${failures} FAILED` : 'all passed'} in ${((Date.now() - T0) / 1000).toFixed(1)} s`);
process.exit(failures ? 1 : 0);
