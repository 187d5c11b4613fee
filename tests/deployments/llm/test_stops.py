"""Stop sequences across awkward chunk boundaries."""

from __future__ import annotations

from deployments.llm.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher, out = StopMatcher(stops), []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_no_stops_passes_text_through_at_once() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == ("abc", False)


def test_stop_split_across_pieces_is_caught_and_not_emitted() -> None:
    assert run(["END"], ["one E", "N", "D two"]) == ("one ", True)


def test_partial_stop_is_held_back_then_released() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("wE") == ("w", False)
    assert matcher.feed("x") == ("Ex", False)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["b", "a"], ["xxab"]) == ("xx", True)


def test_text_without_stop_is_complete_after_flush() -> None:
    assert run(["###"], ["a#", "#b", "c#"]) == ("a##bc#", False)
