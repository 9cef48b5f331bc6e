"""engine.data.normalize_labels: the one rule for class labels, used by the service, the store and train."""

from __future__ import annotations

import re

import numpy as np
import pytest

from engine.data import (
    MAX_LABEL_CHARS,
    LabelError,
    check_labels,
    distinct,
    encode_labels,
    normalize_column,
    normalize_labels,
)


def test_normalize_labels_integer_text_merges_into_ints() -> None:
    y = normalize_labels(["1", "01", "+1", " 2 ", "-3"])
    assert y.dtype == np.int64 and y.tolist() == [1, 1, 1, 2, -3]


def test_normalize_labels_text_is_stripped_and_kept_as_str() -> None:
    y = normalize_labels(np.array(["cat ", " dog", "cat", "1.0"]))
    assert y.dtype.kind == "U" and y.tolist() == ["cat", "dog", "cat", "1.0"]


def test_normalize_labels_ints_bytes_and_mixed_lists() -> None:
    assert normalize_labels(np.array([3, 4], dtype=np.uint8)).tolist() == [3, 4]
    assert normalize_labels(np.array([b"a", b"b"])).tolist() == ["a", "b"]
    assert normalize_labels(["7", 8]).tolist() == [7, 8]


@pytest.mark.parametrize(
    ("labels", "index", "reason"),
    [(["a", "b", " ", ""], 2, "empty label"), (["a", "x" * (MAX_LABEL_CHARS + 1)], 1, "longer than")],
)
def test_normalize_labels_refusal_carries_the_index(labels: list[str], index: int, reason: str) -> None:
    with pytest.raises(LabelError) as info:
        normalize_labels(labels)
    assert info.value.index == index and reason in info.value.reason
    assert isinstance(info.value, ValueError)


def test_normalize_labels_a_million_rows_map_through_the_distinct_values() -> None:
    y = np.array(["no", "yes", "01", "1"])[np.arange(1_000_000) % 2]
    out = normalize_labels(y)
    assert out.shape == (1_000_000,) and out[:4].tolist() == ["no", "yes", "no", "yes"]


def test_check_labels_uses_the_same_rule_for_text() -> None:
    assert check_labels(np.array(["1", "01", "2"]), 3).tolist() == [1, 1, 2]
    assert check_labels(np.array([" a", "b "], dtype=object), 2).tolist() == ["a", "b"]


def test_distinct_survives_a_hash_collision() -> None:
    # Four characters are two 8-byte words w0, w1 hashed as w0 * P + w1 with P = 2**40 + 0x1B3: adding 1 to
    # the first character and taking P (0x1B3 from the third, 0x100 from the fourth) off w1 keeps the hash.
    first, second = "ab" + chr(ord("c") + 0x1B3) + chr(ord("d") + 0x100), "bbcd"
    values = np.array([first, second, first])
    uniques, inverse = distinct(values)
    assert sorted(uniques.tolist()) == sorted([first, second])
    assert uniques[inverse].tolist() == values.tolist()


def test_encode_labels_sorted_classes_and_indices() -> None:
    classes, indices = encode_labels(np.array(["b", "c", "a", "b"]))
    assert classes == ["a", "b", "c"] and indices.tolist() == [1, 2, 0, 1]


def _rule_label_by_label(labels: list[str]) -> list[int] | list[str]:
    """The label rule written out element by element: the reference the column-wise version must match."""
    texts = [label.strip() for label in labels]
    if all(re.fullmatch(r"[+-]?\d{1,18}", text) for text in texts):
        return [int(text) for text in texts]
    return texts


TRICKY = ["1", "01", "+1", " 1", "1.0", "-0", "0", "a", " a ", "A", "é", "日本 ", "9" * 18, "9" * 19, "-" + "9" * 18]


@pytest.mark.parametrize("seed", range(20))
def test_normalize_column_matches_the_rule_label_by_label(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = TRICKY if seed % 2 else [t for t in TRICKY if re.fullmatch(r"\s*[+-]?\d{1,18}\s*", t)]
    labels = [pool[i] for i in rng.integers(0, len(pool), int(rng.integers(1, 5000)))]
    expected = _rule_label_by_label(labels)
    for given in (np.array(labels), np.array([label.encode() for label in labels]), labels):
        column = normalize_column(given)
        assert column.values.tolist() == expected
        assert column.values.dtype.kind == ("i" if isinstance(expected[0], int) else "U")
        assert column.classes.tolist() == np.unique(np.array(expected)).tolist()
        assert column.classes[column.codes].tolist() == expected


def test_normalize_column_a_label_too_long_for_int64_makes_every_label_text() -> None:
    column = normalize_column(np.array(["1", "01", "9" * 19]))
    assert column.values.tolist() == ["1", "01", "9" * 19] and column.classes.tolist() == ["01", "1", "9" * 19]


def test_normalize_column_returns_the_input_when_the_rule_changes_nothing() -> None:
    labels = np.array(["cat", "dog", "cat"])
    assert np.shares_memory(normalize_column(labels).values, labels)
    padded = np.array(["cat ", "dog", "cat"])
    stripped = normalize_column(padded)
    assert stripped.values.tolist() == ["cat", "dog", "cat"] and not np.shares_memory(stripped.values, padded)


@pytest.mark.parametrize("empty", ["", "   ", "\t\n", "\u3000"])
def test_normalize_column_empty_label_is_refused_at_its_index_in_a_large_column(empty: str) -> None:
    labels = np.array(["x", "y"] * 50_000 + [empty] + ["x"])
    with pytest.raises(LabelError) as info:
        normalize_column(labels)
    assert info.value.index == 100_000 and info.value.reason == "empty label"


def test_distinct_finds_a_value_its_sample_missed() -> None:
    values = np.sort(np.array(["a", "b"] * 100_000 + ["rare"]))  # one value between two long runs
    uniques, inverse = distinct(values)
    assert sorted(uniques.tolist()) == ["a", "b", "rare"]
    assert uniques[inverse].tolist() == values.tolist()
