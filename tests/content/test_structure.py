"""Structure detection on streamed text split at awkward places."""

from __future__ import annotations

import pytest

from content.structure import StructureDetector

TEXT = ("# Fractions\nA fraction is a part.\n## Adding\n- same denominators\n- add tops\n"
        "```\n# not a heading\n```\nQuestion 2: what is 1/2 + 1/4?\n")


def run(chunks: list[str]) -> dict:
    detector = StructureDetector()
    for chunk in chunks:
        detector.feed(chunk)
    return detector.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_same_structure_whatever_the_chunking(size: int) -> None:
    state = run([TEXT[i:i + size] for i in range(0, len(TEXT), size)])
    assert state == {"kind": "question", "section": 2, "heading": "Adding", "list_items": 2,
                     "in_code_block": False, "question": 2}


def test_marker_split_across_chunks_is_seen_when_the_line_completes() -> None:
    detector = StructureDetector()
    assert detector.feed("#")["section"] == 0
    assert detector.feed("# Intro")["section"] == 0
    assert detector.feed("\n")["heading"] == "Intro"


def test_code_block_state() -> None:
    detector = StructureDetector()
    assert detector.feed("```python\nx = 1\n")["in_code_block"] is True
    assert detector.feed("```\n")["in_code_block"] is False
