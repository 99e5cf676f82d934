// Shared by the API end-to-end scripts in node (tests/e2e/*.mjs): starts `keel serve` on the tiny
// default model (CPU, dummy weights) on a free port (--port 0, read back from its log), and stops
// it. Every wait is bounded; only loopback is used.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const build = process.env.KEEL_BUILD || 'build';

// The openai package lives in .cache/node (scripts/setup); NODE_PATH points there under tests/run.
export function requireOpenAI() {
  const require = createRequire(import.meta.url);
  try {
    return require('openai');
  } catch {
    return require(path.resolve('.cache/node/node_modules/openai'));
  }
}

export async function startServer(flags = []) {
  const args = ['serve', '--model', '.cache/keel-default', '--load-format', 'dummy', '--device', 'cpu',
                '--port', '0', ...flags];
  const proc = spawn(path.join(build, 'keel'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const onData = (d) => { log += d.toString(); if (log.length > 1 << 20) log = log.slice(-(1 << 19)); };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const deadline = Date.now() + 20000;
  let port = 0;
  while (!port) {
    const m = /listening on http:\/\/[0-9.]+:(\d+)/.exec(log);
    if (m) port = Number(m[1]);
    else if (proc.exitCode !== null) throw new Error(`keel serve exited ${proc.exitCode}:\n${log}`);
    else if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`keel serve did not start:\n${log}`); }
    else await new Promise((r) => setTimeout(r, 50));
  }
  const url = `http://127.0.0.1:${port}`;
  return {
    url, port, proc,
    log: () => log,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null) return proc.exitCode;
      const done = new Promise((r) => proc.once('exit', (code) => r(code)));
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 20000);
      const code = await done;
      clearTimeout(t);
      return code;
    },
  };
}

let failures = 0, passes = 0;
export function check(cond, name, detail = '') {
  if (cond) { passes++; console.log(`ok   ${name}`); }
  else { failures++; console.log(`FAIL ${name} ${detail}`); }
}
export function summary() {
  console.log(`${passes} checks passed, ${failures} failed`);
  return failures === 0;
}
