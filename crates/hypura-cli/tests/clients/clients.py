"""hypura serve through the official Python clients, openai and ollama.

Run by crates/hypura-cli/tests/serve.rs as: clients.py BASE_URL MODEL API_KEY. Each check
asserts; the last line printed is "all checks passed".
"""

import sys

import ollama
import openai

base, model, key = sys.argv[1:4]
question = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
# One seeded, sampled request, asked every way: every way must give the same answer.
SEED, TEMPERATURE, TOKENS = 7, 0.9, 24

oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key)
whole = oa.chat.completions.create(
    model=model, messages=question, temperature=TEMPERATURE, seed=SEED, max_tokens=TOKENS
)
answer = whole.choices[0].message.content
assert answer, whole
assert whole.choices[0].finish_reason in ("stop", "length"), whole
assert whole.usage.completion_tokens > 0, whole
print("openai chat:", repr(answer))

chunks = oa.chat.completions.create(
    model=model,
    messages=question,
    temperature=TEMPERATURE,
    seed=SEED,
    max_tokens=TOKENS,
    stream=True,
)
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == answer, (streamed, answer)
print("openai chat, streamed: the same")

completion = oa.completions.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0
)
text = completion.choices[0].text
assert text.strip(), completion
print("openai completion:", repr(text))

stop = text[-2:]
stopped = oa.completions.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stop=[stop]
)
assert stopped.choices[0].text == text[: text.find(stop)], (stopped, text)
assert stopped.choices[0].finish_reason == "stop", stopped
print("openai completion with a stop string:", repr(stopped.choices[0].text))

try:
    oa.chat.completions.create(model="no-such-model", messages=question)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError:
    print("openai: an unknown model is not found")

ol = ollama.Client(host=base, headers={"Authorization": f"Bearer {key}"})
options = {"temperature": TEMPERATURE, "seed": SEED, "num_predict": TOKENS}
reply = ol.chat(model=model, messages=question, options=options)
assert reply.message.content == answer, (reply, answer)
assert reply.done and reply.eval_count > 0 and reply.prompt_eval_count > 0, reply
print("ollama chat: the same")

parts = list(ol.chat(model=model, messages=question, options=options, stream=True))
assert "".join(p.message.content for p in parts) == answer, parts
assert parts[-1].done and parts[-1].done_reason in ("stop", "length"), parts[-1]
print("ollama chat, streamed: the same")

generated = ol.generate(
    model=model,
    prompt="The capital of France is",
    raw=True,
    options={"temperature": 0, "num_predict": 8},
)
assert generated.response == text, (generated, text)
print("ollama generate: as the openai completion")

listed = ol.list()
assert [m.model for m in listed.models] == [model], listed
assert listed.models[0].details.format == "gguf", listed
assert listed.models[0].size > 0, listed
print("ollama list:", listed.models[0].details)

shown = ol.show(model)
assert shown.details.family, shown
assert shown.modelinfo["general.architecture"] == shown.details.family, shown.modelinfo
assert shown.template, shown
print("ollama show:", shown.details.family, shown.details.parameter_size)

try:
    ol.chat(model="no-such-model", messages=question)
    raise AssertionError("an unknown model was accepted")
except ollama.ResponseError as e:
    assert e.status_code == 404, e
    print("ollama: an unknown model is not found:", e.error)

print("all checks passed")
