"""The official OpenAI Python SDK as a real client of Colloquy's /v1.

Run by scripts/openai-sdk.sh (itself run by the chat-api test `openai_sdk`,
which started the server over a fake upstream that answers `echo: <last user
message>` and a 429 to any message starting with `rate-limit`). Every check
raises on failure; the last line is `RESULT <json>` for the Rust test to
compare with what PostgreSQL holds and what the upstream received.
"""

import json
import os

import openai
from openai import OpenAI

BASE = os.environ["COLLOQUY_BASE_URL"] + "/v1"
KEY = os.environ["COLLOQUY_API_KEY"]
USER = os.environ["COLLOQUY_USER"]
OTHER = os.environ["COLLOQUY_OTHER_USER"]
JWT = os.environ["COLLOQUY_JWT"]
MODEL = os.environ["COLLOQUY_MODEL"]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


def raises(exc, call, what):
    try:
        call()
    except exc as e:
        return e
    raise AssertionError(f"{what}: expected {exc.__name__}")


# The three lines of the README: the internal key as api_key, the end user as a header.
client = OpenAI(base_url=BASE, api_key=KEY, default_headers={"X-Client-User-Id": USER}, max_retries=0)

# Models.
models = client.models.list()
check([m.id for m in models.data] == [MODEL], f"models: {models}")
check(client.models.retrieve(MODEL).id == MODEL, "models.retrieve")

# Chat completions, whole and streamed (stateless).
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
completion = client.chat.completions.create(model=MODEL, messages=messages)
check(completion.choices[0].message.content == "echo: Hello there", f"completion: {completion}")
check(completion.choices[0].finish_reason == "stop", "finish_reason")
check(completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0, "usage")

chunks = list(
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(streamed == "echo: stream me please", f"streamed text: {streamed!r}")
check(all(c.object == "chat.completion.chunk" for c in chunks), "chunk objects")
check(chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0, f"usage chunk: {chunks[-1]}")
check(any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks), "a chunk finishes")

# Conversations: create with items and metadata, retrieve, update.
conv = client.conversations.create(
    metadata={"topic": "demo"},
    items=[
        {"type": "message", "role": "user", "content": "Seeded question"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Seeded answer"}]},
    ],
)
check(conv.metadata == {"topic": "demo"}, f"metadata: {conv}")
check(client.conversations.retrieve(conv.id).id == conv.id, "conversations.retrieve")
updated = client.conversations.update(conv.id, metadata={"topic": "changed", "k": "v"})
check(updated.metadata == {"topic": "changed", "k": "v"}, f"update: {updated}")

# Responses: in the conversation, then continued by previous_response_id, then streamed.
r1 = client.responses.create(model=MODEL, input="first turn", conversation=conv.id)
check(r1.output_text == "echo: first turn", f"r1: {r1}")
check(r1.conversation.id == conv.id, "r1 conversation")
check(r1.usage.total_tokens > 0, "r1 usage")
r2 = client.responses.create(model=MODEL, input="second turn", previous_response_id=r1.id, instructions="Answer kindly.")
check(r2.output_text == "echo: second turn", f"r2: {r2}")
check(r2.conversation.id == conv.id, "previous_response_id continues the same conversation")
back = client.responses.retrieve(r2.id)
check(back.id == r2.id and back.output_text == r2.output_text, f"responses.retrieve: {back}")

events = list(client.responses.create(model=MODEL, input="third turn here", conversation=conv.id, stream=True))
types = [e.type for e in events]
check(types[0] == "response.created" and types[-1] == "response.completed", f"event types: {types}")
check("response.output_text.done" in types, f"event types: {types}")
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
completed = events[-1].response
check(deltas == "echo: third turn here" == completed.output_text, f"streamed response: {deltas!r}")
check(completed.usage.total_tokens > 0, "streamed usage")
check([e.sequence_number for e in events] == list(range(len(events))), "sequence numbers")
check(client.responses.retrieve(completed.id).output_text == deltas, "streamed response is stored")

# A new conversation from a bare response (no conversation named).
fresh = client.responses.create(model=MODEL, input=[{"role": "user", "content": "a fresh start"}])
check(fresh.conversation.id != conv.id and fresh.output_text == "echo: a fresh start", f"fresh: {fresh}")

# Items: create, then list them all (asc, pages of 3 through `after`) and newest first.
added = client.conversations.items.create(
    conv.id, items=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a note"}]}]
)
check([i.content[0].text for i in added.data] == ["a note"], f"items.create: {added}")
items = list(client.conversations.items.list(conv.id, order="asc", limit=3))
texts = [i.content[0].text for i in items]
expected = [
    "Seeded question", "Seeded answer",
    "first turn", "echo: first turn",
    "second turn", "echo: second turn",
    "third turn here", "echo: third turn here",
    "a note",
]
check(texts == expected, f"items: {texts}")
check([i.role for i in items[:2]] == ["user", "assistant"], "roles")
check(items[3].id == "msg_" + r1.id.removeprefix("resp_"), "a response's output item is its stored message")
newest = client.conversations.items.list(conv.id, limit=2)
check([i.content[0].text for i in newest.data] == ["a note", "echo: third turn here"] and newest.has_more, "desc page")

# The same user with a JWT sees the same conversation; another user does not.
jwt_client = OpenAI(base_url=BASE, api_key=JWT, max_retries=0)
check(jwt_client.conversations.retrieve(conv.id).id == conv.id, "JWT caller is the same user")
other = OpenAI(base_url=BASE, api_key=KEY, default_headers={"X-Client-User-Id": OTHER}, max_retries=0)
raises(openai.NotFoundError, lambda: other.conversations.retrieve(conv.id), "another user's conversation")
raises(openai.NotFoundError, lambda: other.responses.retrieve(r1.id), "another user's response")
raises(
    openai.NotFoundError,
    lambda: other.responses.create(model=MODEL, input="hi", previous_response_id=r1.id),
    "continuing another user's response",
)

# SDK exceptions: 401, 404, 429, 400.
bad = OpenAI(base_url=BASE, api_key="not-the-key", default_headers={"X-Client-User-Id": USER}, max_retries=0)
e = raises(openai.AuthenticationError, lambda: bad.models.list(), "wrong key")
check(e.status_code == 401 and e.type == "authentication_error", f"401 body: {e.body}")
e = raises(
    openai.NotFoundError,
    lambda: client.chat.completions.create(model="no-such-model", messages=messages),
    "unknown model",
)
check(e.code == "model_not_found" and e.param == "model", f"404 body: {e.body}")
e = raises(
    openai.RateLimitError,
    lambda: client.responses.create(model=MODEL, input="rate-limit me", conversation=conv.id),
    "upstream 429",
)
check(e.response.headers.get("retry-after") is not None, "429 carries Retry-After")
raises(
    openai.BadRequestError,
    lambda: client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "   "}]),
    "empty message",
)
raises(openai.NotFoundError, lambda: client.responses.retrieve("resp_0123"), "unknown response")

# Delete.
gone = client.conversations.delete(fresh.conversation.id)
check(gone.deleted and gone.id == fresh.conversation.id, f"delete: {gone}")
raises(openai.NotFoundError, lambda: client.conversations.retrieve(fresh.conversation.id), "deleted conversation")

print("RESULT " + json.dumps({"conversation": conv.id, "texts": texts, "deleted": fresh.conversation.id}))
