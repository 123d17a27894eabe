"""gpt.files.untrusted: the strict readers every untrusted file goes through, tested directly."""
import pytest

from gpt.files.untrusted import MAX_SIZE, is_clean_text, is_count, short_repr, strict_json


@pytest.mark.parametrize("text, why", [
    ("NaN", "not a JSON number"), ("[Infinity]", "not a JSON number"), ("1e400", "not a finite number"),
    ('{"a": 1, "a": 2}', "appears twice"), ("1" * 21, "21 digits"), ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_strict_json_refuses_what_json_allows_beyond_json(text, why):
    with pytest.raises(ValueError, match=why):
        strict_json(text)


def test_strict_json_reads_json():
    assert strict_json('{"a": [1, 2.5, null, true, "x"], "b": {"c": 18446744073709551615}}') == {
        "a": [1, 2.5, None, True, "x"], "b": {"c": 2**64 - 1}}


def test_counts_are_ints_in_range_and_never_booleans():
    assert is_count(0) and is_count(MAX_SIZE, 0, MAX_SIZE) and not is_count(MAX_SIZE + 1, 0, MAX_SIZE)
    assert not is_count(True) and not is_count(1.0) and not is_count(-1) and not is_count("3")


def test_clean_text_has_no_nul_and_no_lone_surrogate():
    assert is_clean_text("data/ünïcode.txt")
    assert not is_clean_text("a\0b") and not is_clean_text("a\udc80b") and not is_clean_text(b"bytes")


def test_short_repr_stays_one_short_line():
    assert len(short_repr("x" * 1000)) <= 80 and "..." in short_repr("x" * 1000)
    assert len(short_repr(list(range(10**6)))) <= 80 and short_repr((1, 2)) == "(1, 2)"
    assert short_repr(10 ** 5000) == "<an integer of about 5,001 digits>"    # past str()'s limit
    assert "integer too long" in short_repr([1, 10 ** 5000])
