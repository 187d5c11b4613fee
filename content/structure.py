"""Structure of streamed Markdown-ish text, detected as chunks arrive (split anywhere)."""

from __future__ import annotations

import re
from typing import Any

_HEADING = re.compile(r"^(#{1,6})\s+(.+)$")
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S")
_QUESTION = re.compile(r"^\s*(?:\*\*)?(?:Q(?:uestion)?\s*)(\d+)\b", re.IGNORECASE)


class StructureDetector:
    """Feed text chunks; `state()` says where the stream is: section, heading, list item, code
    block, question number. Only complete lines are classified, so a split marker is never missed."""

    def __init__(self) -> None:
        self._partial = ""
        self.section = 0
        self.heading: str | None = None
        self.list_items = 0
        self.in_code = False
        self.question: int | None = None
        self.kind = "text"

    def feed(self, chunk: str) -> dict[str, Any]:
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)
        return self.state()

    def finish(self) -> dict[str, Any]:
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "section": self.section, "heading": self.heading,
                "list_items": self.list_items, "in_code_block": self.in_code,
                "question": self.question}

    def _line(self, line: str) -> None:
        if line.strip().startswith("```"):
            self.in_code = not self.in_code
            self.kind = "code_block"
            return
        if self.in_code:
            return
        if match := _HEADING.match(line.strip()):
            self.section += 1
            self.heading = match.group(2).strip()
            self.kind = "heading"
        elif match := _QUESTION.match(line):
            self.question = int(match.group(1))
            self.kind = "question"
        elif _LIST.match(line):
            self.list_items += 1
            self.kind = "list_item"
        elif line.strip():
            self.kind = "paragraph"
