"""A streamed reply of tool calling, turned into OpenAI's deltas as it is generated.

The reply is undecided while it could still become `<tool_call>` (its text is held back); then it
is either content, streamed as usual, or calls. A forced reply's calls follow the grammar's
exact form, so each call's name is sent once, with its id, and its arguments are sent in the
fragments they were generated in. With `auto` the model writes freely: its calls are parsed once
the reply is finished and sent whole.

    <tool_call>[{"name": "NAME", "arguments": ARGS}, {"name": ...}]</tool_call>
               ^ calls start     ^ name            ^ args: one JSON value, scanned to its end
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swiftserve.router.tool_format import OPEN, new_call_id, parse_calls

_NAME = '{"name": "'
_ARGS = '", "arguments": '


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
    def __init__(self, is_forced: bool) -> None:
        self.is_forced = is_forced
        self.text = ""
        self.mode: str | None = None  # None (undecided), "content" or "calls"
        self.num_sent_content = 0
        self.sent: list[tuple[str, int]] = []  # per call sent so far: (id, arguments chars sent)

    @property
    def made_calls(self) -> bool:
        return bool(self.sent)

    def feed(self, new_text: str, is_finished: bool) -> StreamPiece:
        self.text += new_text
        if self.mode is None:
            stripped = self.text.lstrip()
            if stripped.startswith(OPEN):
                self.mode = "calls"
            elif OPEN.startswith(stripped) and not is_finished:
                return StreamPiece()
            else:
                self.mode = "content"
        if self.mode == "content":
            piece = StreamPiece(self.text[self.num_sent_content :])
            self.num_sent_content = len(self.text)
            return piece
        if self.is_forced:
            return StreamPiece(calls=self._scanned_deltas())
        return self._parsed_at_end() if is_finished else StreamPiece()

    def _scanned_deltas(self) -> list[CallDelta]:
        deltas = []
        for index, (name, arguments) in enumerate(scan_calls(self.text)):
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
        content, calls = parse_calls(self.text)
        if not calls:  # not a well-formed call after all: it was content
            self.mode = "content"
            return self.feed("", True)
        self.sent = [(call.id, len(call.arguments)) for call in calls]
        deltas = [CallDelta(i, call.id, call.name, call.arguments) for i, call in enumerate(calls)]
        return StreamPiece(content or "", deltas)


def scan_calls(text: str) -> list[tuple[str, str]]:
    """(name, arguments so far) of each call whose name is complete, in a reply of the grammar's
    form; a call's arguments grow until their JSON value ends."""
    start = text.find(OPEN)
    if start < 0 or not text.startswith("[", start + len(OPEN)):
        return []
    pos = start + len(OPEN) + 1
    calls: list[tuple[str, str]] = []
    while True:
        if text.startswith(", ", pos):
            pos += 2
        if not text.startswith(_NAME, pos):
            return calls
        name_end = text.find(_ARGS, pos + len(_NAME))
        if name_end < 0:
            return calls
        name = text[pos + len(_NAME) : name_end]
        args_start = name_end + len(_ARGS)
        args_end = json_value_end(text, args_start)
        if args_end is None:
            calls.append((name, text[args_start:]))
            return calls
        calls.append((name, text[args_start:args_end]))
        pos = args_end + 1  # past the call's closing brace


def json_value_end(text: str, start: int) -> int | None:
    """The end of the JSON object or array that starts at text[start], or None while it is open.
    Only brackets outside strings count; the value is valid JSON by the grammar, so nothing more
    needs checking here."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None
