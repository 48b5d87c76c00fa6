"""The vote of `eval --samples`: which sample's answer a row takes."""

from __future__ import annotations

from typing import Any

import pytest

from promptctl.errors import InputError
from promptctl.providers._openai_wire import chat_response
from promptctl.sampling import DEFAULT_TEMPERATURE, load_sampling, majority


def votes(*answers: Any) -> list[tuple[bool, Any]]:
    """(valid, answer) per sample; None stands for an answer that could not be read."""
    return [(a is not None, a) for a in answers]


@pytest.mark.parametrize(("answers", "chosen"), [
    (("red", "blue", "blue"), 1),                 # the most common, its first sample
    (("red", "blue", "red", "blue"), 0),          # a tie: the answer sampled first
    (("blue", "red", "red", "blue", "green"), 0),
    ((None, None, "green"), 2),                   # unreadable answers do not vote
    ((None, "blue", None, "red", "red"), 3),      # not even as a bloc
    ((None, None), 0),                            # all unreadable: the first sample stands
    (("Paris", "paris", " PARIS ", "Rome"), 0),   # compared as scoring.equals compares
    ((7, "7.0", 8, 8.0, 7.0), 0),                 # numbers as numbers: 7 three times
    (("x",), 0),
])
def test_majority(answers: tuple[Any, ...], chosen: int) -> None:
    assert majority(votes(*answers)) == chosen


def test_majority_of_nothing_is_none() -> None:
    assert majority([]) is None


def test_sampling_defaults_and_bounds(tmp_path: Any) -> None:
    sampling = load_sampling(5, None, None, tmp_path)
    assert (sampling.k, sampling.temperature, sampling.vote) == (5, DEFAULT_TEMPERATURE, "majority")
    assert sampling.options() == {"k": 5, "temperature": DEFAULT_TEMPERATURE, "vote": "majority"}
    with pytest.raises(InputError, match="--temperature 3"):
        load_sampling(5, 3.0, None, tmp_path)
    with pytest.raises(InputError, match="a vote needs 2"):
        load_sampling(1, None, None, tmp_path)


def test_every_choice_of_a_response_is_read_in_index_order() -> None:
    document = {"choices": [
        {"index": 1, "message": {"role": "assistant", "content": "b"}},
        {"index": 0, "message": {"role": "assistant", "content": "a"}},
        {"index": 2, "message": {"role": "assistant", "content": None, "refusal": "no"}},
    ], "usage": {"prompt_tokens": 3, "completion_tokens": 9}}
    response = chat_response(document, latency_ms=1.0, attempts=1)
    assert [c.text for c in response.choices] == ["a", "b", ""]
    assert response.choices[2].no_text == "the model refused: no"
    one = chat_response({"choices": document["choices"][:1]}, latency_ms=1.0, attempts=1)
    assert one.choices == ()
