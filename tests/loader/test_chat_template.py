"""apply_chat_template renders exactly what transformers' tokenizer.apply_chat_template renders."""

from __future__ import annotations

import dataclasses

import pytest

from swiftserve.loader import apply_chat_template, load_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, with unicode: café 🤗\nand a newline."},
    ],
    [
        {"role": "system", "content": ""},
        {"role": "user", "content": "  spaces  "},
        {"role": "assistant", "content": "<|im_end|> inside content"},
    ],
]

# A Llama-3/Qwen-style template that uses the helpers transformers provides.
RICH_TEMPLATE = """{{ bos_token }}
{%- set ns = namespace(count=0) -%}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('bad role: ' + message['role']) }}
    {% endif %}
    {% set ns.count = ns.count + 1 %}
    {% if message['role'] == 'system' and not loop.first %}{% continue %}{% endif %}
<{{ message['role'] }}>{{ message['content'] | trim }}</{{ message['role'] }}>
{% endfor %}
{% if tools is not none %}tools={{ tools | tojson }}{% endif %}
{% if documents is defined %}documents={{ documents | tojson }}{% endif %}
{% if add_generation_prompt %}<assistant>{% endif %}
count={{ ns.count }}{{ eos_token }}"""


@pytest.fixture(scope="module")
def hf_tokenizer(smollm_dir):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(smollm_dir)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_transformers(smollm_dir, hf_tokenizer, conversation, add_generation_prompt):
    info = load_tokenizer(smollm_dir)
    expected = hf_tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert apply_chat_template(info, conversation, add_generation_prompt=add_generation_prompt) == expected


def test_rich_template_matches_transformers(smollm_dir, hf_tokenizer):
    info = dataclasses.replace(load_tokenizer(smollm_dir), chat_template=RICH_TEMPLATE)
    tools = [{"type": "function", "function": {"name": "f", "description": "<b>é</b>", "parameters": {}}}]
    for conversation in CONVERSATIONS:
        for kwargs in ({}, {"tools": tools}):
            options = {"chat_template": RICH_TEMPLATE, "tokenize": False, "add_generation_prompt": True}
            expected = hf_tokenizer.apply_chat_template(conversation, **options, **kwargs)
            assert apply_chat_template(info, conversation, **kwargs) == expected


def test_text_parts_equal_string_content(smollm_dir):
    info = load_tokenizer(smollm_dir)
    text_parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]
    parts = [{"role": "user", "content": text_parts}]
    plain = [{"role": "user", "content": "Hello\nworld"}]
    assert apply_chat_template(info, parts) == apply_chat_template(info, plain)


def test_errors(smollm_dir):
    info = load_tokenizer(smollm_dir)
    with pytest.raises(ValueError, match="no chat template"):
        apply_chat_template(dataclasses.replace(info, chat_template=None), [{"role": "user", "content": "x"}])
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]
    with pytest.raises(ValueError, match="image_url"):
        apply_chat_template(info, image)
    rich = dataclasses.replace(info, chat_template=RICH_TEMPLATE)
    with pytest.raises(ValueError, match="bad role: robot"):
        apply_chat_template(rich, [{"role": "robot", "content": "beep"}])
    with pytest.raises(ValueError, match="invalid chat template"):
        apply_chat_template(dataclasses.replace(info, chat_template="{% for %}"), [])


def test_sandbox_blocks_attribute_escapes(smollm_dir):
    info = dataclasses.replace(
        load_tokenizer(smollm_dir), chat_template="{{ messages.__class__.__mro__[1].__subclasses__() }}"
    )
    with pytest.raises(ValueError):
        apply_chat_template(info, [])
