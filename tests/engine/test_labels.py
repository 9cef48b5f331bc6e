"""engine.data.normalize_labels: the one rule for class labels, used by the service, the store and train."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import MAX_LABEL_CHARS, LabelError, check_labels, distinct, encode_labels, normalize_labels


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
