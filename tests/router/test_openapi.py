"""The published API is snapshotted in docs/openapi.json, so a change to it is a visible diff.
After an intended change: `.venv/bin/python -m router.api > docs/openapi.json`."""

from __future__ import annotations

import json
from pathlib import Path

from router.api import openapi_document

SNAPSHOT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_openapi_document_matches_its_snapshot() -> None:
    assert openapi_document() == json.loads(SNAPSHOT.read_text()), (
        "the public API changed: review the diff of `.venv/bin/python -m router.api` "
        "against docs/openapi.json, then write the new snapshot")
