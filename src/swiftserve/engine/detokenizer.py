"""Incremental detokenization: one token id in, the newly completed text out.

Decoding token by token is wrong in two ways: a UTF-8 character split across byte-level tokens
decodes to U+FFFD halves, and SentencePiece-style decoders drop a token's leading space when it
starts the decoded string. So, as vLLM does, each step decodes a short window twice:

    tokens   ... p p p p p | o o o o | n         (p: prompt context, o: decoded, n: new)
                 ^prefix_offset      ^read_offset
    prefix_text = decode(tokens[prefix_offset:read_offset])
    new_text    = decode(tokens[prefix_offset:])
    emitted     = new_text[len(prefix_text):]   once new_text is longer and does not end in U+FFFD

While the text ends in U+FFFD (an incomplete character) nothing is emitted and the window grows;
once it completes, both offsets move forward, so each step decodes only a few tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import tokenizers

# How many prompt tokens give the first output token its context (a leading space, say).
_PROMPT_CONTEXT_TOKENS = 5
_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns a stream of output token ids into text, one piece per token, never half a character."""

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        prompt_token_ids: Sequence[int],
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        context = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        # A prompt that ends mid-character would glue its bytes onto the output; start clean instead.
        if self._decode(context).endswith(_REPLACEMENT_CHAR):
            context = []
        self._token_ids = context
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._text = ""

    @property
    def text(self) -> str:
        """All output text emitted so far."""
        return self._text

    @property
    def num_pending_tokens(self) -> int:
        """Output tokens whose text is withheld because it ends in an incomplete character."""
        return len(self._token_ids) - self._read_offset

    def append(self, token_id: int) -> str:
        """Add one output token; return the text it completes ("" while a character is incomplete)."""
        self._token_ids.append(token_id)
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._token_ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT_CHAR):
            return ""
        delta = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._token_ids)
        self._text += delta
        return delta

    def flush(self) -> str:
        """At the end of generation: emit withheld text even if it ends in an incomplete character."""
        if not self.num_pending_tokens:
            return ""
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._token_ids[self._prefix_offset :])
        delta = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset = len(self._token_ids)
        self._text += delta
        return delta

    def _decode(self, token_ids: list[int]) -> str:
        if not token_ids:
            return ""
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)
