"""tokenizer.json as llguidance should read it: the added tokens that are not special left to the
vocabulary they are also in.

Hugging Face's tokenizer splits an added token out of plain text whatever its `special` flag, and
a model writes one inside a string like any other token (Gemma 3 lists 165 HTML tags such as
`</iframe>`, id 236, as added, `"special": false`). llguidance 1.9 marks every added token special,
and no grammar allows a special token inside a string, so a valid `"</iframe>"` in Gemma 3's own
tokens was refused. Without those entries llguidance takes each one's bytes from the vocabulary,
under the same id, as an ordinary token. An added token missing from the vocabulary (or there
under another id) stays: its bytes would be lost otherwise.
"""

from __future__ import annotations

import json
import re

_NON_SPECIAL = re.compile(r'"special"\s*:\s*false')


def plain_added_tokens(tokenizer_json: str) -> str:
    """tokenizer_json without the non-special added tokens its vocabulary also holds, same ids;
    unchanged (the same string) when there are none."""
    if not _NON_SPECIAL.search(tokenizer_json):
        return tokenizer_json
    data = json.loads(tokenizer_json)
    vocab = data.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):  # Unigram's list of [piece, score]: no ids to check against
        return tokenizer_json
    added = data.get("added_tokens", [])
    kept = [t for t in added if t.get("special", True) or vocab.get(t.get("content")) != t.get("id")]
    if len(kept) == len(added):
        return tokenizer_json
    data["added_tokens"] = kept
    return json.dumps(data, ensure_ascii=False)
