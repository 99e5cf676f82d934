// Many clients at once against a real `keel serve` (CPU backend, tiny default model):
// 200 concurrent streaming requests all complete with every token; clients that disconnect
// mid-stream are cancelled and leave the KV-cache pool full again (GET /v1/memory, /metrics).
import http from 'node:http';
import net from 'node:net';
import { startServer, check, summary } from './lib/serve.mjs';

const server = await startServer(['--max-model-len', '512']);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

function post(path, body, { abortAfterBytes = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(`${server.url}${path}`, {
      method: 'POST', agent, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
        if (abortAfterBytes && text.length >= abortAfterBytes) {
          req.destroy();
          resolve({ status: res.statusCode, text, aborted: true });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode, text }));
      res.on('error', (e) => (abortAfterBytes ? resolve({ status: res.statusCode, text, aborted: true }) : reject(e)));
    });
    req.setTimeout(60000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => (abortAfterBytes ? resolve({ status: 0, text: '', aborted: true }) : reject(e)));
    req.end(data);
  });
}

async function getJSON(path) {
  const r = await fetch(`${server.url}${path}`);
  return r.headers.get('content-type').includes('json') ? r.json() : r.text();
}

let ok = false;
try {
  // ---- 200 concurrent streams
  const N = 200, T = 3; // few tokens each: on the CPU backend every sequence-step costs ~17 ms (152k-vocab head)
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: N }, (_, i) => post('/v1/completions', {
    prompt: `request number ${i}`, max_tokens: T, ignore_eos: true, stream: true, temperature: 0,
    stream_options: { include_usage: true },
  })));
  const secs = ((Date.now() - t0) / 1000).toFixed(2);
  let complete = 0;
  const bad = [];
  for (const r of results) {
    const events = r.text.split('\n\n').filter((s) => s.length).map((s) => s.replace(/^data: /, ''));
    const done = events[events.length - 1] === '[DONE]';
    const usage = done && events.length >= 2 ? JSON.parse(events[events.length - 2]).usage : null;
    if (r.status === 200 && done && usage && usage.completion_tokens === T) complete++;
    else if (bad.length < 3) bad.push(`${r.status} ${r.text.slice(-300)}`);
  }
  check(complete === N, `${N} concurrent streaming requests all complete (${secs} s)`, `${complete}/${N} complete; ${bad.join(' | ')}`);

  // ---- clients that leave mid-stream
  const before = await getJSON('/v1/memory');
  const M = 20;
  const aborted = await Promise.all(Array.from({ length: M }, (_, i) => post('/v1/completions', {
    prompt: `leave early ${i}`, max_tokens: 400, ignore_eos: true, stream: true, temperature: 0,
  }, { abortAfterBytes: 200 })));
  check(aborted.every((r) => r.aborted), `${M} clients disconnect mid-stream`);
  let mem = null;
  const deadline = Date.now() + 20000;
  for (;;) {
    mem = await getJSON('/v1/memory');
    if ((mem.kv_pool.n_free === mem.kv_pool.n_blocks && mem.requests.running === 0 && mem.requests.waiting === 0) ||
        Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  check(mem.kv_pool.n_free === mem.kv_pool.n_blocks && mem.kv_pool.n_blocks === before.kv_pool.n_blocks &&
        mem.requests.running === 0, 'the KV pool is full again after the disconnects',
        JSON.stringify(mem.kv_pool) + JSON.stringify(mem.requests));
  const metrics = await getJSON('/metrics');
  const m = /keel_request_success_total\{[^}]*finished_reason="abort"\} (\d+)/.exec(metrics);
  check(m && Number(m[1]) >= M, 'the disconnected requests count as aborted in /metrics', m ? m[0] : 'no series');
  const running = /keel_num_requests_running\{[^}]*\} (\d+)/.exec(metrics);
  check(running && running[1] === '0', '/metrics shows no request running', running ? running[0] : 'no series');

  // ---- thousands of idle connections do not block anyone
  const K = 2000;
  const socks = await Promise.all(Array.from({ length: K }, () => new Promise((resolve) => {
    const s = net.connect(server.port, '127.0.0.1', () => resolve(s));
    s.on('error', () => resolve(s));
  })));
  await new Promise((r) => setTimeout(r, 200));
  const t1 = Date.now();
  const health = await fetch(`${server.url}/health`);
  const conns = /keel_http_connections (\d+)/.exec(await getJSON('/metrics'));
  check(health.status === 200 && conns && Number(conns[1]) >= K,
        `${K} idle connections open, /health still answers (${Date.now() - t1} ms)`, conns ? conns[0] : '');
  for (const s of socks) s.destroy();

  // The server still serves normally afterwards.
  const after = await post('/v1/completions', { prompt: 'still here', max_tokens: 3, ignore_eos: true });
  check(after.status === 200 && JSON.parse(after.text).usage.completion_tokens === 3, 'the server still answers afterwards');
  const code = await server.stop('SIGTERM');
  check(code === 0, 'keel serve exits 0 on SIGTERM', `exit ${code}`);
  ok = summary();
} catch (e) {
  console.log(`FAIL exception: ${e.stack}\n--- server log\n${server.log().slice(-3000)}`);
} finally {
  if (server.proc.exitCode === null) server.proc.kill('SIGKILL');
}
process.exit(ok ? 0 : 1);
