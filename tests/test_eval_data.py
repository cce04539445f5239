"""The quality benchmark's evaluation file parses, and every item is checked for something.

`python -m bench quality` reads it only when run by hand or by `make bench`; a typo in a regex or a
category would otherwise wait for the next benchmark run to show."""

from __future__ import annotations

from bench.quality import load_eval

CATEGORIES = {"commands", "follow-ups", "chit-chat", "knowledge", "refusals"}


def test_the_evaluation_file_parses_and_every_item_is_checked() -> None:
    evals = load_eval()
    assert len(evals.items) >= 30 and evals.spoken
    assert {item.category for item in evals.items} == CATEGORIES
    for item in evals.items:
        checks = item.turns[-1].checks
        assert checks is not None and checks.no_match, item.id  # at least the default "no setup advice"
        assert checks.match or checks.tool or checks.max_chars, f"{item.id} checks nothing of its own"
