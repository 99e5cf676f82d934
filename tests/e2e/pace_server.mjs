// A tiny OpenAI-compatible server whose timing is known, for checking keel-bench's figures
// (tests/e2e/bench_pace.sh). Every streamed request gets its first token FIRST ms after it
// arrives and then one token every ITL ms, max_tokens tokens in all, then a usage chunk and
// [DONE]. Each event is written in two pieces 2 ms apart, the second at the token's exact
// time, so the client must join events split across reads without the timing moving.
//
//   node pace_server.mjs serve [--first-ms 100] [--itl-ms 20] [--fail-every K] [--drop-every K]
//                              [--api-key KEY]
//
// prints "listening PORT" once it listens on a free port. --fail-every K answers every K-th
// request with a 503 and an OpenAI-style error; --drop-every K closes every K-th request's
// connection after two tokens, mid-stream; --api-key KEY answers 401 on /v1/* without
// "Authorization: Bearer KEY". GET /stats gives {requests, peak_in_flight, connections}.
// Chat streams start with a role-only delta at once, which is not a token.
//
// Run without arguments (as tests/run does for every *.mjs), it checks its own pacing.
import http from 'node:http';

function parseArgs(argv) {
  const o = { firstMs: 100, itlMs: 20, failEvery: 0, dropEvery: 0, apiKey: '' };
  for (let i = 0; i < argv.length; i += 2) {
    const v = Number(argv[i + 1]);
    if (argv[i] === '--api-key') o.apiKey = argv[i + 1];
    else
    if (argv[i] === '--first-ms') o.firstMs = v;
    else if (argv[i] === '--itl-ms') o.itlMs = v;
    else if (argv[i] === '--fail-every') o.failEvery = v;
    else if (argv[i] === '--drop-every') o.dropEvery = v;
    else throw new Error(`unknown option ${argv[i]}`);
  }
  return o;
}

// Prompt tokens as the test defines them: one per id, or one per whitespace-separated word.
function countPrompt(body) {
  const words = (s) => (typeof s === 'string' ? s.split(/\s+/).filter(Boolean).length : 0);
  if (Array.isArray(body.prompt)) return body.prompt.length;
  if (typeof body.prompt === 'string') return words(body.prompt);
  return (body.messages || []).reduce((n, m) => n + words(m.content), 0);
}

export function startServer(opts) {
  const stats = { requests: 0, inFlight: 0, peak_in_flight: 0, connections: 0 };
  const server = http.createServer((req, res) => {
    if (opts.apiKey && req.url.startsWith('/v1/') &&
        req.headers.authorization !== `Bearer ${opts.apiKey}`) {
      res.statusCode = 401;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ error: { message: 'pace server: bad api key', type: 'auth' } }));
      return;
    }
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'pace-model', object: 'model' }] }));
      return;
    }
    if (req.method === 'GET' && req.url === '/stats') {
      const { inFlight, ...rest } = stats;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(rest));
      return;
    }
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => handle(req, res, raw));
  });
  server.on('connection', () => stats.connections++);

  function handle(req, res, raw) {
    const t0 = performance.now();
    const chat = req.url === '/v1/chat/completions';
    if (!chat && req.url !== '/v1/completions') {
      res.statusCode = 404;
      res.end(JSON.stringify({ error: { message: `no route ${req.url}`, type: 'not_found' } }));
      return;
    }
    const body = JSON.parse(raw);
    const n = body.max_tokens ?? body.max_completion_tokens ?? 16;
    const index = ++stats.requests;
    if (opts.failEvery && index % opts.failEvery === 0) {
      res.statusCode = 503;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ error: { message: 'pace server: overloaded', type: 'overloaded' } }));
      return;
    }
    const drop = opts.dropEvery && index % opts.dropEvery === 0;
    stats.inFlight++;
    stats.peak_in_flight = Math.max(stats.peak_in_flight, stats.inFlight);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    const id = `pace-${index}`;
    const chunk = (k) => {
      const last = k === n - 1;
      const choice = chat
        ? { index: 0, delta: { content: ` t${k}` }, finish_reason: last ? 'length' : null }
        : { index: 0, text: ` t${k}`, logprobs: null, finish_reason: last ? 'length' : null };
      return `data: ${JSON.stringify({ id, object: 'chunk', model: body.model, choices: [choice] })}\n\n`;
    };
    if (chat) res.write(`data: ${JSON.stringify({ id, choices: [{ index: 0, delta: { role: 'assistant' } }] })}\n\n`);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      stats.inFlight--;
    };
    res.on('close', finish);
    // One chain of timers per response, each aimed at an absolute deadline: lateness never
    // accumulates, and the writes cannot overtake each other (separate node timers may fire
    // out of order, since node truncates their delays to whole milliseconds).
    const actions = [];
    for (let k = 0; k < n; k++) {
      const due = opts.firstMs + k * opts.itlMs;
      const text = chunk(k);
      const cut = Math.floor(text.length / 2);
      actions.push([due - 2, () => res.write(text.slice(0, cut))]);
      actions.push([due, () => {
        res.write(text.slice(cut));
        if (k === n - 1) {
          const p = countPrompt(body);
          const usage = { prompt_tokens: p, completion_tokens: n, total_tokens: p + n };
          res.write(`data: ${JSON.stringify({ id, choices: [], usage })}\n\n`);
          res.end('data: [DONE]\n\n');
          finish();
        }
      }]);
      if (drop && k === 1) { // end() flushes both tokens first, then closes mid-stream
        actions.push([due + opts.itlMs / 2, () => {
          finish();
          res.socket.end();
        }]);
      }
    }
    let next = 0;
    const step = () => {
      while (!done && next < actions.length && actions[next][0] <= performance.now() - t0 + 0.5)
        actions[next++][1]();
      if (!done && next < actions.length)
        setTimeout(step, Math.max(0, t0 + actions[next][0] - performance.now()));
    };
    step();
  }
  return server;
}

async function selfCheck() {
  const server = startServer({ firstMs: 60, itlMs: 20, failEvery: 0, dropEvery: 0 });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  const t0 = performance.now();
  const resp = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
    method: 'POST',
    body: JSON.stringify({ model: 'm', prompt: [1, 2, 3], max_tokens: 5, stream: true }),
  });
  const text = await resp.text();
  const ms = performance.now() - t0;
  server.close();
  const events = text.split('\n\n').filter(Boolean);
  const usage = JSON.parse(events[events.length - 2].slice(6)).usage;
  // 5 tokens: the last at 60 + 4 * 20 = 140 ms; never sooner, and later only by the noise of a
  // busy machine (fetch's first use alone can take a few hundred ms there).
  const ok = events.length === 7 && usage.prompt_tokens === 3 && usage.completion_tokens === 5 &&
             ms >= 138 && ms < 3000;
  console.log(`pace_server self-check: ${events.length} events, usage ${JSON.stringify(usage)}, ` +
              `${ms.toFixed(1)} ms (want 7 events, 3/5 tokens, >= 140 ms): ${ok ? 'ok' : 'FAIL'}`);
  process.exit(ok ? 0 : 1);
}

if (process.argv[2] === 'serve') {
  const opts = parseArgs(process.argv.slice(3));
  const server = startServer(opts);
  server.keepAliveTimeout = 30000;
  server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
} else {
  selfCheck();
}
