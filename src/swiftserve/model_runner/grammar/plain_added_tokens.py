"""tokenizer.json as llguidance should read it: the added tokens that are not special left to the
vocabulary they are also in.

Hugging Face's tokenizer splits an added token out of plain text whatever its `special` flag, and
a model writes one inside a string like any other token (Gemma 3 lists 165 HTML tags such as
`</iframe>`, id 236, as added, `"special": false`). llguidance 1.9 marks every added token special,
and no grammar allows a special token inside a string, so a valid `"</iframe>"` in Gemma 3's own
tokens was refused. Without those entries llguidance takes each one's bytes from the vocabulary,
under the same id, as an ordinary token. An added token missing from the vocabulary (or there
under another id) stays: its bytes would be lost otherwise.

Only the `added_tokens` array is parsed and replaced in the serialized text: Gemma 3's whole file
is 33 MB of JSON, about a second to parse and write again, with the GIL held.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer

_KEY = '"added_tokens":'


def plain_added_tokens(tokenizer: Tokenizer) -> str:
    """tokenizer.json's text without the non-special added tokens that the model's vocabulary
    holds under the same id."""
    text = tokenizer.to_str()
    plain = {
        id for id, token in tokenizer.get_added_tokens_decoder().items()
        if not token.special and tokenizer.model.token_to_id(token.content) == id
    }  # fmt: skip
    if not plain:
        return text
    start = text.index(_KEY) + len(_KEY)  # a top-level key, written before the model's vocabulary
    added, end = json.JSONDecoder().raw_decode(text, start)
    kept = [token for token in added if token["id"] not in plain]
    return text[:start] + json.dumps(kept, ensure_ascii=False, separators=(",", ":")) + text[end:]
