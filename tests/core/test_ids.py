"""Ids: unique within a process and across processes, shaped like uuid4().hex."""

from __future__ import annotations

import re
import subprocess
import sys

from core.ids import new_id


def test_ids_are_unique_and_shaped_like_uuid_hex() -> None:
    ids = [new_id("chatcmpl-") for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{32}", i) for i in ids[:10])


def test_another_process_draws_other_ids() -> None:
    code = "from core.ids import new_id; print(new_id())"
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert theirs[:16] != new_id()[:16]
