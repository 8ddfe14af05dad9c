"""A model folder's tokenizer (tokenizer.json) with its special tokens and chat template."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer


@dataclass(frozen=True)
class TokenizerInfo:
    """The fast tokenizer plus what the engine and server need to know about its special tokens.

    eos_token_ids is the union of the ids that end a generation according to config.json,
    generation_config.json and tokenizer_config.json.
    """

    tokenizer: Tokenizer = field(repr=False)
    bos_token: str | None
    eos_token: str | None
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    chat_template: str | None
    add_bos_token: bool
    vocab_size: int
    special_token_ids: frozenset[int]
    # True when add_bos_token asks for BOS but tokenizer.json's post-processor does not add it.
    prepends_bos: bool = field(default=False, repr=False)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of text; with add_special_tokens, BOS comes first only if the model wants it."""
        ids = self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.prepends_bos:
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def load_tokenizer(folder: Path) -> TokenizerInfo:
    """Loads tokenizer.json and the special tokens / chat template from the folder's JSON files."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no tokenizer.json (only fast tokenizers are supported)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on bad files
        raise ValueError(f"{path}: cannot load tokenizer: {error}") from error
    # Like transformers, pad and truncate only when a caller asks to (MiniLM's file pads to 128).
    tokenizer.no_padding()
    tokenizer.no_truncation()

    config = _read_json(folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    model_config = _read_json(folder / "config.json")
    generation_config = _read_json(folder / "generation_config.json")

    bos_token = _token_text(config.get("bos_token", special_map.get("bos_token")))
    eos_token = _token_text(config.get("eos_token", special_map.get("eos_token")))
    bos_token_id = tokenizer.token_to_id(bos_token) if bos_token is not None else None
    if bos_token_id is None and isinstance(model_config.get("bos_token_id"), int):
        bos_token_id = model_config["bos_token_id"]
        bos_token = tokenizer.id_to_token(bos_token_id)

    eos_candidates = [
        *_ids(generation_config.get("eos_token_id")),
        *_ids(model_config.get("eos_token_id")),
        *([tokenizer.token_to_id(eos_token)] if eos_token is not None else []),
    ]
    eos_token_ids = tuple(dict.fromkeys(i for i in eos_candidates if i is not None))

    add_bos_token = bool(config.get("add_bos_token", False))
    added = tokenizer.get_added_tokens_decoder()
    special_ids = {token_id for token_id, token in added.items() if token.special}
    special_ids.update(eos_token_ids)
    if bos_token_id is not None:
        special_ids.add(bos_token_id)
    return TokenizerInfo(
        tokenizer=tokenizer,
        bos_token=bos_token,
        eos_token=eos_token,
        bos_token_id=bos_token_id,
        eos_token_ids=eos_token_ids,
        chat_template=_chat_template(folder, config),
        add_bos_token=add_bos_token,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        special_token_ids=frozenset(special_ids),
        prepends_bos=add_bos_token and bos_token_id is not None and not _adds_bos(tokenizer, bos_token_id),
    )


def _adds_bos(tokenizer: Tokenizer, bos_token_id: int) -> bool:
    """Whether tokenizer.json's post-processor already puts BOS in front (Llama-3 style)."""
    return tokenizer.encode("a", add_special_tokens=True).ids[:1] == [bos_token_id]


def _chat_template(folder: Path, config: dict) -> str | None:
    """chat_template.jinja (newer transformers) or tokenizer_config.json's chat_template."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default", next(iter(named.values()), None))
    return template if isinstance(template, str) else None


def _token_text(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


def _ids(value) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: invalid JSON: {error}") from error
    return data if isinstance(data, dict) else {}
