"""A model folder's tokenizer (tokenizer.json) with its special tokens and chat template."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from swiftserve.loader.snapshot_format import TokenizerFiles


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


# The JSON files next to tokenizer.json that say which tokens are special (a snapshot keeps them).
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def load_tokenizer(source: Path) -> TokenizerInfo:
    """Loads tokenizer.json and the special tokens / chat template from a model folder's JSON
    files, or the same from a snapshot file (which keeps their text)."""
    source = Path(source)
    if source.is_file():
        return _snapshot_tokenizer(source)
    files = read_tokenizer_files(source)
    return tokenizer_from_texts(
        files.tokenizer_json,
        files.config_files,
        model_config=_read_json(source / "config.json"),
        chat_template=read_chat_template_file(source),
        where=source / "tokenizer.json",
    )


def read_tokenizer_files(folder: Path) -> TokenizerFiles:
    """tokenizer.json's text and its config files' texts: what a snapshot keeps of a folder."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no tokenizer.json (only fast tokenizers are supported)")
    texts = {name: _read_text(Path(folder) / name) for name in CONFIG_FILES}
    present = {name: text for name, text in texts.items() if text is not None}
    return TokenizerFiles(path.read_text(encoding="utf-8"), present)


def _snapshot_tokenizer(path: Path) -> TokenizerInfo:
    from swiftserve.loader.snapshot_reader import read_header

    meta = read_header(path).meta
    return tokenizer_from_texts(
        meta.tokenizer.tokenizer_json,
        meta.tokenizer.config_files,
        model_config=meta.hf_config,
        chat_template=meta.chat_template,
        where=path,
    )


def tokenizer_from_texts(
    tokenizer_json: str,
    config_files: dict[str, str],
    *,
    model_config: dict,
    chat_template: str | None,
    where: Path,
) -> TokenizerInfo:
    """A TokenizerInfo from tokenizer.json's text and its config files' texts (by file name).

    chat_template (chat_template.jinja's text, or a snapshot's final template) wins over
    tokenizer_config.json's.
    """
    try:
        tokenizer = Tokenizer.from_str(tokenizer_json)
    except Exception as error:  # tokenizers raises a bare Exception on bad files
        raise ValueError(f"{where}: cannot load tokenizer: {error}") from error
    # Like transformers, pad and truncate only when a caller asks to (MiniLM's file pads to 128).
    tokenizer.no_padding()
    tokenizer.no_truncation()

    config = _parse_json(config_files.get("tokenizer_config.json"), where, "tokenizer_config.json")
    special_map = _parse_json(config_files.get("special_tokens_map.json"), where, "special_tokens_map.json")
    generation_config = _parse_json(
        config_files.get("generation_config.json"), where, "generation_config.json"
    )
    if chat_template is None:
        chat_template = _config_template(config)

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
        chat_template=chat_template,
        add_bos_token=add_bos_token,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        special_token_ids=frozenset(special_ids),
        prepends_bos=add_bos_token and bos_token_id is not None and not _adds_bos(tokenizer, bos_token_id),
    )


def _adds_bos(tokenizer: Tokenizer, bos_token_id: int) -> bool:
    """Whether tokenizer.json's post-processor already puts BOS in front (Llama-3 style)."""
    return tokenizer.encode("a", add_special_tokens=True).ids[:1] == [bos_token_id]


def read_chat_template_file(folder: Path) -> str | None:
    """chat_template.jinja (newer transformers), which wins over tokenizer_config.json's template."""
    jinja_file = folder / "chat_template.jinja"
    return jinja_file.read_text(encoding="utf-8") if jinja_file.is_file() else None


def _config_template(config: dict) -> str | None:
    """tokenizer_config.json's chat_template: a string, or named templates (the default one)."""
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


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text: {error}") from error


def _read_json(path: Path) -> dict:
    return _parse_json(_read_text(path), path.parent, path.name)


def _parse_json(text: str | None, where: Path, name: str) -> dict:
    """A JSON file's object ({} when absent or not an object); ValueError on invalid JSON."""
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: {name}: invalid JSON: {error}") from error
    return data if isinstance(data, dict) else {}
