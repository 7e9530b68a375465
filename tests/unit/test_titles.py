"""What a model's answer becomes as a trip title (shared.domain.titles.clean_title)."""

from __future__ import annotations

import pytest

from shared.domain.titles import TITLE_MAX, clean_title


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ("Lisbon food markets", "Lisbon food markets"),
        ('"Lisbon food markets"', "Lisbon food markets"),
        ("\u201cKyoto in autumn.\u201d", "Kyoto in autumn"),
        ("**Title:** Three days in Porto!", "Three days in Porto"),
        ("Title: 'Iceland ring road'", "Iceland ring road"),
        ("\n\n  Patagonia   trek \n(a note the model added)", "Patagonia trek"),
        ("# Alps by train", "Alps by train"),
    ],
)
def test_answers_become_plain_titles(answer: str, title: str) -> None:
    assert clean_title(answer) == title


def test_long_answers_are_cut_at_a_word_within_the_limit() -> None:
    answer = "A grand tour of " + "the Italian hill towns and " * 5
    title = clean_title(answer)
    assert title is not None and len(title) <= TITLE_MAX
    assert answer.startswith(title) and answer[len(title)] == " "


def test_one_long_word_is_cut_at_the_limit() -> None:
    assert clean_title("x" * 100) == "x" * TITLE_MAX


@pytest.mark.parametrize("answer", ["", "   \n  ", '""', "...", "Title:", "bad\x00title", "\ud800"])
def test_nothing_usable_is_none(answer: str) -> None:
    assert clean_title(answer) is None
