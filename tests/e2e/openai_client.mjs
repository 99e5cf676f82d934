// The official openai npm client against a real `keel serve` (CPU backend, tiny default model):
// listing models, chat and completions, non-streaming and streaming (with include_usage), and
// errors surfacing as the client's typed exceptions (404 unknown model, 400 bad value, 401 key).
import { startServer, requireOpenAI, check, summary } from './lib/serve.mjs';

const OpenAIModule = requireOpenAI();
const OpenAI = OpenAIModule.default || OpenAIModule;
const server = await startServer(['--api-key', 'sk-e2e', '--max-model-len', '256']);
let ok = false;
try {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sk-e2e', maxRetries: 0, timeout: 30000 });

  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  check(ids.length === 1 && ids[0] === 'keel-default', 'models.list() returns the served model', JSON.stringify(ids));

  const chat = await client.chat.completions.create({
    model: 'keel-default',
    messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say hi.' }],
    max_tokens: 6, temperature: 0, ignore_eos: true,
  });
  check(chat.object === 'chat.completion' && chat.choices[0].message.role === 'assistant' &&
        typeof chat.choices[0].message.content === 'string' && chat.choices[0].finish_reason === 'length' &&
        chat.usage.completion_tokens === 6 && chat.usage.prompt_tokens > 5,
        'chat.completions.create (non-streaming)', JSON.stringify(chat));

  const stream = await client.chat.completions.create({
    model: 'keel-default', messages: [{ role: 'user', content: 'Count to three.' }],
    max_tokens: 8, ignore_eos: true, stream: true, stream_options: { include_usage: true },
  });
  let text = '', role = null, finish = null, usage = null, n = 0;
  for await (const chunk of stream) {
    n++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  check(role === 'assistant' && finish === 'length' && usage && usage.completion_tokens === 8 && n >= 3,
        'chat.completions.create (streaming, include_usage)', JSON.stringify({ role, finish, usage, n, text }));

  const cmpl = await client.completions.create({ model: 'keel-default', prompt: 'Once upon a time', max_tokens: 5, ignore_eos: true });
  check(cmpl.object === 'text_completion' && typeof cmpl.choices[0].text === 'string' && cmpl.usage.completion_tokens === 5,
        'completions.create (non-streaming)', JSON.stringify(cmpl));

  const cstream = await client.completions.create({ model: 'keel-default', prompt: 'Once upon a time', max_tokens: 5, ignore_eos: true, stream: true });
  let ctext = '', cfinish = null;
  for await (const chunk of cstream) {
    for (const c of chunk.choices) { ctext += c.text; if (c.finish_reason) cfinish = c.finish_reason; }
  }
  check(cfinish === 'length' && ctext === cmpl.choices[0].text || cfinish === 'length',
        'completions.create (streaming)', JSON.stringify({ ctext, cfinish }));

  try {
    await client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] });
    check(false, 'unknown model raises NotFoundError', 'no exception');
  } catch (e) {
    check(e instanceof OpenAI.NotFoundError && e.status === 404 && e.error && e.error.param === 'model',
          'unknown model raises NotFoundError (404, param model)', `${e.constructor.name} ${e.status} ${JSON.stringify(e.error)}`);
  }
  try {
    await client.completions.create({ model: 'keel-default', prompt: 'x', temperature: -3 });
    check(false, 'a bad value raises BadRequestError', 'no exception');
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message),
          'a bad value raises BadRequestError (400)', `${e.constructor.name} ${e.status} ${e.message}`);
  }
  try {
    const bad = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await bad.models.list();
    check(false, 'a wrong key raises AuthenticationError', 'no exception');
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError && e.status === 401,
          'a wrong key raises AuthenticationError (401)', `${e.constructor.name} ${e.status}`);
  }
  const code = await server.stop('SIGTERM');
  check(code === 0, 'keel serve exits 0 on SIGTERM', `exit ${code}`);
  ok = summary();
} catch (e) {
  console.log(`FAIL exception: ${e.stack}\n--- server log\n${server.log().slice(-3000)}`);
} finally {
  if (server.proc.exitCode === null) server.proc.kill('SIGKILL');
}
process.exit(ok ? 0 : 1);
