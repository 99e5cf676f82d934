// A bounded mixed load for the reliability scripts: `node tests/e2e/lib/rel_load.mjs PORT N [CONNS]`
// sends N requests over CONNS (8) keep-alive connections, covering every endpoint and the paths that
// free things early: streams read to the end, streams dropped after their first event, bad JSON
// (400), unknown routes (404), bodies past the limit (413, needs --max-body-bytes 65536). Prints
// one JSON line of counts and exits 1 on an unexpected status.
import { RawConn, percentile } from './rel_serve.mjs';

const port = Number(process.argv[2]);
const N = Number(process.argv[3] || 3000);
const CONNS = Number(process.argv[4] || 8);
if (!port) { console.error('usage: rel_load.mjs PORT [N]'); process.exit(2); }

function req(method, path, body = null) {
  const b = body === null ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  return `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    (body === null ? '' : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n`) + `\r\n${b}`;
}

// Each kind: [request text, expected status, how: 'keep' | 'drop' (fresh connection, leave
// after the first event) | 'close' (fresh connection, the server closes it)].
function job(i) {
  switch (i % 12) {
    case 0: return [req('GET', '/health'), 200, 'keep'];
    case 1: return [req('GET', '/v1/models'), 200, 'keep'];
    case 2: return [req('POST', '/tokenize', { prompt: `text ${i} \u00e9\u4f60` }), 200, 'keep'];
    case 3: return [req('POST', '/detokenize', { tokens: [1, 2, 3, i % 1000] }), 200, 'keep'];
    case 4: return [req('GET', '/metrics'), 200, 'keep'];
    case 5: return [req('POST', '/v1/completions', { prompt: `n ${i}`, max_tokens: 1 + (i % 3), temperature: 0.7 }), 200, 'keep'];
    case 6: return [req('POST', '/v1/chat/completions', { messages: [{ role: 'user', content: `hi ${i}` }], max_tokens: 2 }), 200, 'keep'];
    case 7: return [req('POST', '/v1/completions', { prompt: `s ${i}`, max_tokens: 3, stream: true, stream_options: { include_usage: true } }), 200, 'keep'];
    case 8: return [req('POST', '/v1/chat/completions', { messages: [{ role: 'user', content: `d ${i}` }], max_tokens: 16, stream: true }), 200, 'drop'];
    case 9: return [req('POST', '/v1/completions', `{"prompt": "x", "max_tokens": ${i}`), 400, 'keep'];
    case 10: return [req('GET', `/no/such/route/${i}`), 404, 'keep'];
    default: return [`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${1 << 20}\r\n\r\n`, 413, 'close'];
  }
}

let next = 0;
const counts = {};
const unexpected = [];
const lat = [];
const t0 = Date.now();
await Promise.all(Array.from({ length: CONNS }, async () => {
  let c = null;
  while (next < N) {
    const i = next++;
    const [text, want, how] = job(i);
    const s = Date.now();
    let got;
    try {
      if (how === 'keep') {
        if (!c || c.closed) { c = new RawConn(port); await c.connected(); }
        c.send(text);
        got = (await c.response(30000)).status;
      } else {
        const d = new RawConn(port);
        await d.connected();
        d.send(text);
        if (how === 'drop') {
          const deadline = Date.now() + 30000;
          while (!d.buf.includes('data: ') && !d.closed && Date.now() < deadline) await d.wait(deadline - Date.now());
          got = d.buf.includes('data: ') ? 200 : 'no event';
        } else {
          got = (await d.response(30000)).status;
        }
        d.destroy();
      }
    } catch (e) {
      got = `error: ${e.message}`;
      if (c) c.destroy();
      c = null;
    }
    lat.push(Date.now() - s);
    counts[got] = (counts[got] || 0) + 1;
    if (got !== want && unexpected.length < 10) unexpected.push(`#${i} wanted ${want}, got ${got}`);
  }
  if (c) c.destroy();
}));
const secs = (Date.now() - t0) / 1000;
console.log(JSON.stringify({ requests: N, seconds: Number(secs.toFixed(1)), per_s: Math.round(N / secs),
  p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99), statuses: counts, unexpected }));
process.exit(unexpected.length ? 1 : 0);
