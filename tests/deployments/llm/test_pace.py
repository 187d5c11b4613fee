"""The llama.cpp replica's pace and its estimate of a request's time to first token: what it counts
from measured steps (pure: no model)."""

from __future__ import annotations

import pytest

from deployments.llm.pace import PREFILL_PRIOR_S, STEP_PRIOR_S, Pace


def busy_pace() -> Pace:
    """8 answers decoded together take 80 ms a step; a prompt token read adds 4 ms."""
    pace = Pace()
    pace.calibrated(read_s=64 * 0.004, read=64, decode_s=0.02)
    pace.measured(0.08, read=0, answers=8)
    return pace


def test_a_new_request_under_a_full_batch_counts_its_own_prompt_and_the_batchs_steps() -> None:
    pace = busy_pace()
    # 400 prompt tokens of its own, read 512 a step in one step that also decodes the 8 answers.
    alone = pace.first_token(0.0, ahead=0, own=400, answers=0, chunk=512)
    full = pace.first_token(0.0, ahead=0, own=400, answers=8, chunk=512)
    assert alone == pytest.approx(1.6)
    assert full == pytest.approx(1.6 + 0.08)
    # Read 64 a step (prefill_chunk), it takes 7 of the batch's steps.
    assert pace.first_token(0.0, 0, 400, 8, chunk=64) == pytest.approx(1.6 + 7 * 0.08)


def test_a_follower_waits_for_the_lesson_ahead_of_it_before_its_own_question() -> None:
    """Under a 2 s limit: its own 20 tokens alone pass; behind a 450-token lesson being read they
    do not, so it is refused at once rather than after waiting."""
    pace = busy_pace()
    own = pace.first_token(0.0, ahead=0, own=20, answers=1, chunk=512)
    behind = pace.first_token(0.0, ahead=450, own=20, answers=1, chunk=512)
    assert own < 0.2
    assert behind == pytest.approx(450 * 0.004 + 0.02 + 20 * 0.004 + 0.02)
    assert behind > 1.9


def test_a_slot_wait_counts_the_full_batchs_steps_and_overlaps_the_reading_ahead() -> None:
    pace = busy_pace()
    wait = pace.slot_wait([30, 50], ahead=1, whole=96, answers=8)
    assert wait == pytest.approx(50 * 0.08)
    assert pace.slot_wait([30, 50], ahead=2, whole=96, answers=8) == pytest.approx((30 + 96) * 0.08)
    # The prompts ahead are read while it waits: the longer of the two, then its own.
    assert pace.first_token(wait, ahead=100, own=10, answers=8, chunk=512) \
        == pytest.approx(wait + 10 * 0.004 + 0.08)


def test_a_batch_size_not_measured_is_scaled_up_from_the_nearest_below() -> None:
    pace = Pace()
    assert pace.decode_at(4) == pytest.approx(4 * STEP_PRIOR_S)  # nothing measured: the prior
    pace.measured(0.03, read=0, answers=2)
    assert pace.decode_at(4) == pytest.approx(0.06)  # on the high side: batching costs less
    assert pace.decode_at(1) == pytest.approx(0.03)  # fewer answers take no longer than measured
    assert pace.decode_at(0) == 0.0
    pace.measured(0.05, read=0, answers=4)
    assert pace.decode_at(4) == pytest.approx(0.05)
    assert pace.decode_at(8) == pytest.approx(0.10)


def test_a_long_read_teaches_the_prefill_rate_faster_than_a_short_one() -> None:
    long, short = Pace(), Pace()
    long.measured(500 * 0.01, read=500, answers=0)  # 10 ms a token: a busy machine
    short.measured(40 * 0.01, read=40, answers=0)
    assert long.prefill_s == pytest.approx((PREFILL_PRIOR_S + 0.01) / 2)
    assert PREFILL_PRIOR_S < short.prefill_s < long.prefill_s
    few = Pace()
    few.measured(1.0, read=8, answers=0)  # too few tokens to tell
    assert few.prefill_s == PREFILL_PRIOR_S


def test_what_a_step_reading_beside_answers_adds_is_the_prefills() -> None:
    pace = busy_pace()
    before = pace.prefill_s
    pace.measured(0.08 + 500 * before, read=500, answers=8)
    assert pace.prefill_s == pytest.approx(before)


def test_calibration_replaces_the_priors() -> None:
    pace = Pace()
    pace.calibrated(read_s=0.64, read=64, decode_s=0.03)
    assert pace.prefill_s == pytest.approx(0.01)
    assert pace.decode_at(1) == pytest.approx(0.03)
    assert pace.as_answer_tokens(300) == round(300 * 0.01 / 0.03)
