"""Talks to kbqa's /v1/chat/completions with the official `openai` package.

Usage: openai_client.py BASE_URL QUESTION
Prints one JSON object: the non-streamed and the streamed results.
"""

import json
import sys

import openai

base_url, question = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
messages = [{"role": "user", "content": question}]

plain = client.chat.completions.create(model="kbqa", messages=messages)
plain_extra = plain.model_extra or {}

parts = []
finish = None
extension = None
usage = None
chunks = 0
content_chunks = 0
for chunk in client.chat.completions.create(
    model="kbqa",
    messages=messages,
    stream=True,
    stream_options={"include_usage": True},
):
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.content:
            parts.append(choice.delta.content)
            content_chunks += 1
        if choice.finish_reason:
            finish = choice.finish_reason
            extension = (chunk.model_extra or {}).get("kbqa")

json.dump(
    {
        "plain": {
            "object": plain.object,
            "content": plain.choices[0].message.content,
            "finish_reason": plain.choices[0].finish_reason,
            "usage": plain.usage.model_dump() if plain.usage else None,
            "kbqa": plain_extra.get("kbqa"),
        },
        "stream": {
            "chunks": chunks,
            "content_chunks": content_chunks,
            "content": "".join(parts),
            "finish_reason": finish,
            "usage": usage,
            "kbqa": extension,
        },
        "models": [m.id for m in client.models.list().data],
    },
    sys.stdout,
    ensure_ascii=False,
)
