"""A streamed reply of tool calling, turned into OpenAI's deltas as it is generated.

The reply is undecided while it could still become the format's opening tag (its text is held
back); then it is content, streamed as usual, until the opening tag appears (a piece that could be
the start of the tag is held back until it is known not to be), and calls from the tag on: the text
before the tag is the message's content, as a reply parsed at the end has it. A reply whose calls
a grammar wrote (tool_choice required or named, or `auto` once the tag is out) has the format's
exact form: where the format can scan it (router/tool_format.py's), each call's name is sent once,
with its id, and its arguments in the fragments they were generated in. Otherwise the calls are
parsed once the reply is finished and sent whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swiftserve.router.tool_format import json_value_end, new_call_id, scan_calls
from swiftserve.router.tool_formats import DEFAULT, ToolFormat

__all__ = ["CallDelta", "StreamPiece", "ToolCallStream", "json_value_end", "scan_calls"]


@dataclass
class CallDelta:
    index: int
    id: str | None  # on a call's first delta only, with its name
    name: str | None
    arguments: str


@dataclass
class StreamPiece:
    content: str = ""
    calls: list[CallDelta] = field(default_factory=list)


class ToolCallStream:
    def __init__(self, is_forced: bool, fmt: ToolFormat = DEFAULT) -> None:
        """is_forced: the calls follow the format's grammar exactly (scanned as they grow)."""
        self.is_forced = is_forced
        self.fmt = fmt
        self.text = ""
        self.mode: str | None = None  # None (undecided), "content" or "calls"
        self.num_sent_content = 0
        self.call_start = 0  # where the calls begin in text (the opening tag)
        self.sent: list[tuple[str, int]] = []  # per call sent so far: (id, arguments chars sent)

    @property
    def made_calls(self) -> bool:
        return bool(self.sent)

    def feed(self, new_text: str, is_finished: bool) -> StreamPiece:
        self.text += new_text
        if self.mode is None:
            stripped = self.text.lstrip()
            if stripped.startswith(self.fmt.open_tag):
                self.mode = "calls"
            elif self.fmt.open_tag.startswith(stripped) and not is_finished:
                return StreamPiece()
            else:
                self.mode = "content"
        if self.mode == "content":
            return self._content(is_finished)
        return self._calls(is_finished)

    def _content(self, is_finished: bool) -> StreamPiece:
        """The content not sent yet, up to the opening tag (then the calls from it on); a tail that
        may be the tag's beginning waits for the next piece, unless the reply is finished."""
        tag = self.fmt.open_tag
        found = self.text.find(tag, self.num_sent_content)
        if found < 0:
            end = len(self.text) if is_finished else len(self.text) - _tag_prefix_at_end(self.text, tag)
            piece = StreamPiece(self.text[self.num_sent_content : end])
            self.num_sent_content = max(end, self.num_sent_content)
            return piece
        before = self.text[self.num_sent_content : found]
        self.num_sent_content, self.call_start, self.mode = found, found, "calls"
        piece = self._calls(is_finished)
        return StreamPiece(before + piece.content, piece.calls)

    def _calls(self, is_finished: bool) -> StreamPiece:
        if self.is_forced and self.fmt.can_scan:
            return StreamPiece(calls=self._scanned_deltas())
        return self._parsed_at_end() if is_finished else StreamPiece()

    def _scanned_deltas(self) -> list[CallDelta]:
        deltas = []
        for index, (name, arguments) in enumerate(self.fmt.scan(self.text[self.call_start :])):
            if index == len(self.sent):
                call_id = new_call_id()
                self.sent.append((call_id, 0))
                deltas.append(CallDelta(index, call_id, name, ""))
            call_id, num_sent = self.sent[index]
            if len(arguments) > num_sent:
                fragment = arguments[num_sent:]
                if deltas and deltas[-1].index == index:
                    deltas[-1].arguments += fragment
                else:
                    deltas.append(CallDelta(index, None, None, fragment))
                self.sent[index] = (call_id, len(arguments))
        return deltas

    def _parsed_at_end(self) -> StreamPiece:
        content, calls = self.fmt.parse(self.text[self.call_start :])
        if not calls:  # not a well-formed call after all: it was content, all of it
            piece = StreamPiece(self.text[self.num_sent_content :])
            self.num_sent_content, self.mode = len(self.text), "content"
            return piece
        self.sent = [(call.id, len(call.arguments)) for call in calls]
        deltas = [CallDelta(i, call.id, call.name, call.arguments) for i, call in enumerate(calls)]
        return StreamPiece(content or "", deltas)


def _tag_prefix_at_end(text: str, tag: str) -> int:
    """The length of the longest end of text that is a beginning of tag (0: none)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
