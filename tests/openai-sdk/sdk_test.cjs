// The official OpenAI TypeScript SDK (npm `openai`) as a real client of
// Colloquy's /v1. Run by scripts/openai-sdk.sh (itself run by the chat-api
// test `openai_sdk`, over a fake upstream answering `echo: <last user
// message>`, and a 429 to messages starting with `rate-limit`). Every check
// throws on failure; the last line is `RESULT <json>` for the Rust test.
'use strict';
const OpenAI = require('openai');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env('COLLOQUY_BASE_URL') + '/v1';
const KEY = env('COLLOQUY_API_KEY');
const USER = env('COLLOQUY_USER');
const OTHER = env('COLLOQUY_OTHER_USER');
const MODEL = env('COLLOQUY_MODEL');

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function rejects(Err, promise, what) {
  try {
    await promise;
  } catch (e) {
    if (e instanceof Err) return e;
    throw new Error(`${what}: expected ${Err.name}, got ${e}`);
  }
  throw new Error(`${what}: expected ${Err.name}`);
}

async function main() {
  const client = new OpenAI({ baseURL: BASE, apiKey: KEY, defaultHeaders: { 'X-Client-User-Id': USER }, maxRetries: 0 });

  const models = await client.models.list();
  check(JSON.stringify(models.data.map((m) => m.id)) === JSON.stringify([MODEL]), 'models');

  const completion = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Hello from node' }],
  });
  check(completion.choices[0].message.content === 'echo: Hello from node', 'completion');
  check(completion.usage.total_tokens > 0, 'completion usage');

  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'node stream please' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) streamed += chunk.choices[0].delta.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  check(streamed === 'echo: node stream please', `streamed: ${streamed}`);
  check(usage && usage.total_tokens > 0, 'stream usage');

  const conv = await client.conversations.create({ metadata: { app: 'node' } });
  check(conv.metadata.app === 'node', 'metadata');
  check((await client.conversations.retrieve(conv.id)).id === conv.id, 'retrieve');
  const updated = await client.conversations.update(conv.id, { metadata: { app: 'node2' } });
  check(updated.metadata.app === 'node2', 'update');

  const r1 = await client.responses.create({ model: MODEL, input: 'node first', conversation: conv.id });
  check(r1.output_text === 'echo: node first', `r1: ${JSON.stringify(r1)}`);
  const r2 = await client.responses.create({ model: MODEL, input: 'node second', previous_response_id: r1.id });
  check(r2.output_text === 'echo: node second' && r2.conversation.id === conv.id, 'r2');
  check((await client.responses.retrieve(r2.id)).output_text === r2.output_text, 'responses.retrieve');

  const events = await client.responses.create({ model: MODEL, input: 'node streamed', conversation: conv.id, stream: true });
  let deltas = '';
  let completed = null;
  for await (const event of events) {
    if (event.type === 'response.output_text.delta') deltas += event.delta;
    if (event.type === 'response.completed') completed = event.response;
  }
  check(deltas === 'echo: node streamed', `deltas: ${deltas}`);
  check(completed && completed.output[0].content[0].text === deltas && completed.usage.total_tokens > 0, 'completed');

  await client.conversations.items.create(conv.id, {
    items: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'node note' }] }],
  });
  const texts = [];
  for await (const item of client.conversations.items.list(conv.id, { order: 'asc', limit: 2 })) {
    texts.push(item.content[0].text);
  }
  const expected = ['node first', 'echo: node first', 'node second', 'echo: node second', 'node streamed', 'echo: node streamed', 'node note'];
  check(JSON.stringify(texts) === JSON.stringify(expected), `items: ${JSON.stringify(texts)}`);

  const other = new OpenAI({ baseURL: BASE, apiKey: KEY, defaultHeaders: { 'X-Client-User-Id': OTHER }, maxRetries: 0 });
  await rejects(OpenAI.NotFoundError, other.conversations.retrieve(conv.id), "another user's conversation");
  const bad = new OpenAI({ baseURL: BASE, apiKey: 'not-the-key', defaultHeaders: { 'X-Client-User-Id': USER }, maxRetries: 0 });
  await rejects(OpenAI.AuthenticationError, bad.models.list(), 'wrong key');
  const e404 = await rejects(
    OpenAI.NotFoundError,
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    'unknown model',
  );
  check(e404.code === 'model_not_found', `404 code: ${e404.code}`);
  await rejects(
    OpenAI.RateLimitError,
    client.responses.create({ model: MODEL, input: 'rate-limit node', conversation: conv.id }),
    'upstream 429',
  );

  const deleted = await client.conversations.delete(conv.id);
  check(deleted.deleted === true, 'delete');
  await rejects(OpenAI.NotFoundError, client.conversations.retrieve(conv.id), 'deleted conversation');

  console.log('RESULT ' + JSON.stringify({ conversation: conv.id, texts }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
