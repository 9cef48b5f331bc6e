"""The dataset parsers: CSV, NPZ and JSON lists, including property tests on arbitrary bytes."""

from __future__ import annotations

import io
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.parsing import DatasetError, Limits, from_lists, parse_csv, parse_npz
from tests.service.conftest import npz_bytes

LIMITS = Limits(max_rows=1000, max_features=50, max_classes=20)


def test_parse_csv_bom_crlf_and_quoted_fields() -> None:
    data = '\ufeff"a","b, with comma",label\r\n1,"2.5",x\r\n"3",4,y\r\n'.encode()
    dataset = parse_csv(data, label_column=None, limits=LIMITS)
    assert dataset.X.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert dataset.y.tolist() == ["x", "y"]
    assert dataset.feature_names == ["a", "b, with comma"]


def test_parse_csv_integer_labels_become_ints() -> None:
    dataset = parse_csv(b"a,label\n1, 2\n2,-3\n3,2\n", label_column=None, limits=LIMITS)
    assert dataset.y.dtype == np.int64
    assert dataset.y.tolist() == [2, -3, 2]


def test_parse_csv_label_column_by_name() -> None:
    dataset = parse_csv(b"label,a,b\ncat,1,2\ndog,3,4\n", label_column="label", limits=LIMITS)
    assert dataset.X.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert dataset.y.tolist() == ["cat", "dog"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a,b,label\n1,2,0\n1,2\n", ["row 2", "line 3", "column 3", "2 fields, expected 3"]),
        (b"a,b,label\n1,2,0\n1,2,1,9\n", ["row 2", "column 4", "extra"]),
        (b"a,b,label\n1,2,0\n1,abc,1\n", ["row 2", "column 'b'", "'abc' is not a number"]),
        (b"a,b,label\n1,,0\n1,2,1\n", ["row 1", "column 'b'", "is not a number"]),
        (b"a,b,label\n1,2,0\nnan,2,1\n", ["row 2", "column 'a'", "'nan' is not a finite number"]),
        (b"a,b,label\n1,2,0\n1,inf,1\n", ["row 2", "column 'b'", "not a finite number"]),
        (b"a,b,label\n1,2,0\n1,1e999,1\n", ["row 2", "column 'b'", "not a finite number"]),
        (b"", ["empty file"]),
        (b"\r\n\r\n", ["empty file"]),
        (b"a,b,label\n", ["no data rows"]),
        (b"a,b,label\n1,2,0\n3,4,0\n", ["only one class"]),
        (b"a,b,label\n1,2,\n3,4,1\n", ["row 1", "column 'label'", "empty label"]),
        (b"label\n1\n2\n", ["header"]),
        (b"a,b\n\xff\xfe,1\n", ["not UTF-8"]),
    ],
)
def test_parse_csv_rejects_naming_where(data: bytes, expected: list[str]) -> None:
    with pytest.raises(DatasetError) as info:
        parse_csv(data, label_column=None, limits=LIMITS)
    for fragment in expected:
        assert fragment in info.value.message


def test_parse_csv_unknown_label_column() -> None:
    with pytest.raises(DatasetError, match="label_column: 'target'"):
        parse_csv(b"a,label\n1,0\n2,1\n", label_column="target", limits=LIMITS)


def test_parse_csv_limits_name_the_limit() -> None:
    rows = "\n".join(f"{i},{i % 2}" for i in range(12))
    with pytest.raises(DatasetError, match="max_rows=10") as info:
        parse_csv(f"a,label\n{rows}\n".encode(), label_column=None, limits=Limits(10, 5, 5))
    assert info.value.code == "limit_exceeded"
    with pytest.raises(DatasetError, match="max_features=2"):
        parse_csv(b"a,b,c,label\n1,2,3,0\n1,2,3,1\n", label_column=None, limits=Limits(10, 2, 5))
    with pytest.raises(DatasetError, match="max_classes=2"):
        parse_csv(b"a,label\n1,0\n2,1\n3,2\n", label_column=None, limits=Limits(10, 2, 2))


def test_parse_npz_int_and_text_labels() -> None:
    X = np.arange(8, dtype=np.float32).reshape(4, 2)
    dataset = parse_npz(npz_bytes(X=X, y=np.array([0, 1, 0, 1], dtype=np.uint8)), limits=LIMITS)
    assert dataset.X.dtype == np.float64 and dataset.X.shape == (4, 2)
    assert dataset.y.tolist() == [0, 1, 0, 1]
    dataset = parse_npz(npz_bytes(X=X, y=np.array(["a", "b", "a", "b"])), limits=LIMITS)
    assert dataset.y.tolist() == ["a", "b", "a", "b"]
    dataset = parse_npz(npz_bytes(X=X, y=np.array(["1", "2", "1", "2"])), limits=LIMITS)
    assert dataset.y.tolist() == [1, 2, 1, 2]


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"X": np.zeros((3, 2))}, "no array 'y'"),
        ({"X": np.zeros(3), "y": np.array([0, 1, 0])}, "X: expected 2 dimensions"),
        ({"X": np.zeros((3, 2)), "y": np.array([0, 1])}, "2 labels for 3 rows"),
        ({"X": np.array([[1.0, np.nan], [0, 0]]), "y": np.array([0, 1])}, "row 1, column 2"),
        ({"X": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "whole numbers"),
        ({"X": np.array([["a", "b"], ["c", "d"]]), "y": np.array([0, 1])}, "not numeric"),
        ({"X": np.zeros((2, 2)), "y": np.array([1, 1])}, "only one class"),
    ],
)
def test_parse_npz_rejects(arrays: dict[str, np.ndarray], fragment: str) -> None:
    with pytest.raises(DatasetError) as info:
        parse_npz(npz_bytes(**arrays), limits=LIMITS)
    assert fragment in info.value.message


class _Tripwire:
    """Unpickling this writes a file: the parser must refuse it without unpickling."""

    path = ""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "unpickled"))  # type: ignore[return-value]


def test_parse_npz_rejects_object_arrays_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled.txt"
    _Tripwire.path = str(marker)
    y = np.empty(2, dtype=object)
    y[0], y[1] = _Tripwire(), _Tripwire()
    buffer = io.BytesIO()
    np.savez(buffer, X=np.zeros((2, 2)), y=y)  # numpy pickles object arrays
    with pytest.raises(DatasetError, match="object arrays"):
        parse_npz(buffer.getvalue(), limits=LIMITS)
    assert not marker.exists()
    # a raw pickle inside the archive is not a .npy either (written by hand, protocol 0: `os.mkdir(marker)`)
    tripwire = b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("X.npy", tripwire)
        archive.writestr("y.npy", tripwire)
    with pytest.raises(DatasetError, match=r"not a valid \.npy"):
        parse_npz(raw.getvalue(), limits=LIMITS)
    assert not marker.exists()


def test_parse_npz_checks_size_before_reading() -> None:
    X = np.zeros((30, 60))
    with pytest.raises(DatasetError, match="exceed the limits"):
        parse_npz(npz_bytes(X=X, y=np.zeros(30)), limits=Limits(max_rows=10, max_features=10, max_classes=5))


def test_from_lists_rejects_ragged_rows_and_label_count() -> None:
    with pytest.raises(DatasetError, match=r"features\[1\]: 1 values, expected 2"):
        from_lists([[1.0, 2.0], [3.0]], [0, 1], limits=LIMITS)
    with pytest.raises(DatasetError, match="labels: 1 labels for 2 rows"):
        from_lists([[1.0], [2.0]], [0], limits=LIMITS)
    dataset = from_lists([[1.0], [2.0]], ["7", 8], limits=LIMITS)
    assert dataset.y.tolist() == [7, 8]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=400) | st.text(alphabet='0123456789,.-e"\r\n abn\ufeff', max_size=200).map(str.encode)
)
def test_parse_csv_any_bytes_give_a_dataset_or_a_dataset_error(data: bytes) -> None:
    try:
        dataset = parse_csv(data, label_column=None, limits=LIMITS)
    except DatasetError as exc:
        assert exc.message
    else:
        assert dataset.X.shape[0] == dataset.y.shape[0] >= 2
        assert np.all(np.isfinite(dataset.X))


_VALID_NPZ = npz_bytes(X=np.arange(6.0).reshape(3, 2), y=np.array([0, 1, 0]))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=600)
    | st.builds(
        lambda cut, flip, value: bytes(
            b if i != flip % max(cut, 1) else value for i, b in enumerate(_VALID_NPZ[:cut] or _VALID_NPZ)
        ),
        st.integers(1, len(_VALID_NPZ)),
        st.integers(0, len(_VALID_NPZ)),
        st.integers(0, 255),
    )
)
def test_parse_npz_any_bytes_give_a_dataset_or_a_dataset_error(data: bytes) -> None:
    try:
        dataset = parse_npz(data, limits=LIMITS)
    except DatasetError as exc:
        assert exc.message
    else:
        assert dataset.X.ndim == 2 and len(dataset.y) == len(dataset.X)


def _zip(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return buffer.getvalue()


def _npy_header_only(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(2**64, 1), (2**32, 2**32)])
def test_parse_npz_forged_huge_shape_is_a_limit_not_an_overflow(shape: tuple[int, ...]) -> None:
    data = _zip(X=_npy_header_only(shape), y=_npy_header_only((3,), "<i8"))
    with pytest.raises(DatasetError) as caught:
        parse_npz(data, limits=LIMITS)
    assert caught.value.code == "limit_exceeded" and "X:" in caught.value.message


def test_parse_npz_corrupt_compressed_members_are_dataset_errors() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=np.random.default_rng(0).normal(size=(40, 5)), y=np.arange(40) % 2)
    valid = buffer.getvalue()
    start = valid.index(b"X.npy") + 5
    for offset in range(start, start + 60, 3):  # damage the deflate stream of X in many places
        damaged = bytearray(valid)
        damaged[offset : offset + 30] = bytes(30)
        with pytest.raises(DatasetError):
            parse_npz(bytes(damaged), limits=LIMITS)


def test_parse_npz_decompression_bomb_is_refused_by_size() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=np.zeros((2000, 100)), y=np.arange(2000) % 2)
    assert len(buffer.getvalue()) < 100_000  # small on the wire ...
    limits = Limits(max_rows=10_000, max_features=200, max_classes=5, max_bytes=1_000_000)
    with pytest.raises(DatasetError) as caught:  # ... 1.6 MB once inflated
        parse_npz(buffer.getvalue(), limits=limits)
    assert caught.value.code == "limit_exceeded" and "max_upload_bytes" in caught.value.message


def test_parse_npz_zero_rows_with_float_labels_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError):
        parse_npz(npz_bytes(X=np.zeros((0, 3)), y=np.zeros((0,))), limits=LIMITS)


# --- the fast CSV path: same messages, formats of the wild, bounded memory --------------------------


def _large_csv(rows: int, features: int = 8) -> list[str]:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(rows, features)).round(5)
    labels = np.array(["cat", "dog", "bird"])[rng.integers(0, 3, rows)]
    return [",".join(map(repr, row)) + f",{label}" for row, label in zip(values.tolist(), labels, strict=True)]


def test_parse_csv_bad_cell_near_the_end_of_a_large_file_is_named_exactly() -> None:
    lines = _large_csv(120_000)  # several blocks of the fast path
    cells = lines[119_990].split(",")
    lines[119_990] = ",".join([cells[0], "x7", *cells[2:]])
    lines.insert(5, "")  # a blank line shifts the line numbers, not the row numbers
    header = ",".join(f"f{i}" for i in range(8)) + ",label"
    data = "\n".join([header, *lines, ""]).encode()
    limits = Limits(max_rows=1_000_000, max_features=50, max_classes=20)
    with pytest.raises(DatasetError) as info:
        parse_csv(data, label_column=None, limits=limits)
    assert info.value.message == "row 119991 (line 119993), column 'f1' (#2): 'x7' is not a number"
    assert info.value.details["row"] == 119_991 and info.value.details["line"] == 119_993


def test_parse_csv_ragged_row_and_empty_label_in_a_large_file_name_row_and_line() -> None:
    lines = _large_csv(60_000)
    ragged = [*lines[:59_000], "1,2,3", *lines[59_000:]]
    data = ("\n".join([",".join(f"f{i}" for i in range(8)) + ",label", *ragged]) + "\n").encode()
    with pytest.raises(DatasetError, match=r"^row 59001 \(line 59002\): 3 fields, expected 9"):
        parse_csv(data, label_column=None, limits=Limits(1_000_000, 50, 20))
    empty = [*lines[:100], lines[100].rsplit(",", 1)[0] + ",  ", *lines[101:]]
    data = ("\n".join([",".join(f"f{i}" for i in range(8)) + ",label", *empty]) + "\n").encode()
    with pytest.raises(DatasetError, match=r"^row 101 \(line 102\), column 'label' \(#9\): empty label"):
        parse_csv(data, label_column=None, limits=Limits(1_000_000, 50, 20))


def test_parse_csv_quoted_fields_with_commas_and_quotes() -> None:
    data = b'a,"b ""quoted""",label\n"1.5"," 2",\'x\'\n3,4,"y, with comma"\n5,6,"say ""hi"""\n'
    dataset = parse_csv(data, label_column=None, limits=LIMITS)
    assert dataset.feature_names == ["a", 'b "quoted"']
    assert dataset.X.tolist() == [[1.5, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert dataset.y.tolist() == ["'x'", "y, with comma", 'say "hi"']


def test_parse_csv_utf8_bom_is_not_part_of_the_first_name() -> None:
    dataset = parse_csv("\ufeffa,b,label\n1,2,é\n3,4,ü\n".encode(), label_column="label", limits=LIMITS)
    assert dataset.feature_names == ["a", "b"]
    assert dataset.y.tolist() == ["é", "ü"]


def test_parse_csv_crlf_line_endings() -> None:
    dataset = parse_csv(b"a,b,label\r\n1,2,x\r\n3,4,y\r\n", label_column=None, limits=LIMITS)
    assert dataset.X.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert dataset.y.tolist() == ["x", "y"]  # no stray carriage return
    with pytest.raises(DatasetError, match=r"row 2 \(line 3\), column 'b' \(#2\): '4q' is not a number"):
        parse_csv(b"a,b,label\r\n1,2,x\r\n3,4q,y\r\n", label_column=None, limits=LIMITS)


def test_parse_csv_label_column_in_the_middle() -> None:
    data = b"a,kind,b,c\n1,x,2,3\n4,y,5,6\n7,x,8,9\n"
    dataset = parse_csv(data, label_column="kind", limits=LIMITS)
    assert dataset.feature_names == ["a", "b", "c"]
    assert dataset.X.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
    assert dataset.y.tolist() == ["x", "y", "x"]
    with pytest.raises(DatasetError, match=r"row 2 \(line 3\), column 'c' \(#4\): 'zz' is not a number"):
        parse_csv(b"a,kind,b,c\n1,x,2,3\n4,y,5,zz\n", label_column="kind", limits=LIMITS)


def test_parse_csv_float_looking_labels_stay_text_and_integer_text_merges() -> None:
    dataset = parse_csv(b"a,label\n1,1.0\n2,0.0\n3,1.0\n", label_column=None, limits=LIMITS)
    assert dataset.y.dtype.kind == "U" and dataset.y.tolist() == ["1.0", "0.0", "1.0"]
    dataset = parse_csv(b"a,label\n1,1\n2,01\n3,+1\n4,0\n", label_column=None, limits=LIMITS)
    assert dataset.y.dtype == np.int64 and dataset.y.tolist() == [1, 1, 1, 0]


def test_parse_csv_blank_lines_are_skipped_and_counted_as_lines() -> None:
    data = b"a,label\n\n1,x\n\n\n2,y\n\n"
    dataset = parse_csv(data, label_column=None, limits=LIMITS)
    assert dataset.X.tolist() == [[1.0], [2.0]]
    with pytest.raises(DatasetError, match=r"^row 2 \(line 6\), column 'a' \(#1\): 'b' is not a number"):
        parse_csv(b"a,label\n\n1,x\n\n\nb,y\n", label_column=None, limits=LIMITS)


def test_parse_csv_features_in_the_requested_dtype() -> None:
    data = b"a,label\n1.5,x\n2.5,y\n"
    assert parse_csv(data, label_column=None, limits=LIMITS, dtype=np.float32).X.dtype == np.float32
    with pytest.raises(DatasetError, match="'1e39' is not a finite number"):  # beyond float32's range
        parse_csv(b"a,label\n1e39,x\n2,y\n", label_column=None, limits=LIMITS, dtype=np.float32)


def test_parse_csv_reads_a_file_object() -> None:
    dataset = parse_csv(io.BytesIO(b"a,label\n1,x\n2,y\n"), label_column=None, limits=LIMITS)
    assert dataset.y.tolist() == ["x", "y"]


def _peak_bytes(function: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_parse_csv_peak_memory_within_three_times_the_file() -> None:
    header = ",".join(f"f{i}" for i in range(8)) + ",label"
    data = ("\n".join([header, *_large_csv(150_000)]) + "\n").encode()
    upload = io.BytesIO(data)
    limits = Limits(max_rows=1_000_000, max_features=50, max_classes=20)
    for dtype in (np.float32, np.float64):
        peak = _peak_bytes(lambda: parse_csv(upload, label_column=None, limits=limits, dtype=dtype))  # noqa: B023
        assert peak <= 3 * len(data), (dtype, peak, len(data))


def test_parse_csv_wide_header_refused_while_reading_it() -> None:
    wide = b",".join(b"c%d" % i for i in range(300_000)) + b"\n"  # 2.3 MB header, 50 columns allowed
    data = wide + b"1,2\n"

    def parse() -> None:
        with pytest.raises(DatasetError, match="max_features=50") as info:
            parse_csv(data, label_column=None, limits=LIMITS)
        assert info.value.code == "limit_exceeded"

    peak = _peak_bytes(parse)
    assert peak < len(wide) // 4


# --- NPZ hardening -----------------------------------------------------------------------------------


def test_parse_npz_header_length_capped_before_inflating() -> None:
    declared = 0xF0000000  # a 4 GB header NumPy's reader would read whole
    member = b"\x93NUMPY\x02\x00" + declared.to_bytes(4, "little") + b" " * 2_000_000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("X.npy", member)
        archive.writestr("y.npy", member)
    data = buffer.getvalue()

    def parse() -> None:
        with pytest.raises(DatasetError, match=r"X: not a valid \.npy array \(header of 4026531840 bytes"):
            parse_npz(data, limits=LIMITS)

    assert _peak_bytes(parse) < 1_000_000


@pytest.mark.parametrize("shape", [(2**64, 0), (0, 2**64), (-(2**64), 0), (-1, 0), (3, -2)])
def test_parse_npz_forged_dimension_is_a_limit_error(shape: tuple[int, ...]) -> None:
    data = _zip(X=_npy_header_only(shape), y=_npy_header_only((3,), "<i8"))
    with pytest.raises(DatasetError) as caught:
        parse_npz(data, limits=LIMITS)
    assert caught.value.code == "limit_exceeded" and "dimension outside" in caught.value.message


def test_parse_npz_size_counted_in_the_bytes_the_engine_holds() -> None:
    X = np.ones((1000, 300), dtype=np.int8)  # 300 KB as int8, 1.2 MB as float32, 2.4 MB as float64
    y = np.arange(1000) % 2
    limits = Limits(max_rows=10_000, max_features=500, max_classes=5, max_bytes=2_000_000)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=X, y=y)
    dataset = parse_npz(buffer.getvalue(), limits=limits, dtype=np.float32)
    assert dataset.X.dtype == np.float32 and dataset.X.shape == (1000, 300)
    with pytest.raises(DatasetError, match="2400000 bytes once decompressed and converted") as caught:
        parse_npz(buffer.getvalue(), limits=limits, dtype=np.float64)
    assert caught.value.code == "limit_exceeded"


def test_parse_npz_float32_kept_without_copy_semantics_and_fortran_order() -> None:
    X = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    dataset = parse_npz(npz_bytes(X=X, y=np.array([0, 1, 0, 1])), limits=LIMITS, dtype=np.float32)
    assert dataset.X.dtype == np.float32 and dataset.X.flags.c_contiguous
    assert dataset.X.tolist() == X.tolist()
    with pytest.raises(DatasetError, match="row 1, column 1 is not a finite number"):
        parse_npz(npz_bytes(X=np.array([[1e300], [0.0]]), y=np.array([0, 1])), limits=LIMITS, dtype=np.float32)


def test_from_lists_label_errors_name_the_row() -> None:
    with pytest.raises(DatasetError, match="labels row 2: empty label"):
        from_lists([[1.0], [2.0]], ["a", " "], limits=LIMITS)


def _npz_with_x_bytes(changes: dict[int, int]) -> bytes:
    """A stored .npz of 300 rows whose X data has bytes changed (offsets counted from X's first value)."""
    X = np.arange(600, dtype=np.float64).reshape(300, 2)
    data = bytearray(npz_bytes(X=X, y=np.arange(300) % 2))
    start = data.index(X.tobytes())
    for offset, value in changes.items():
        data[start + offset] = value
    return bytes(data)


def test_parse_npz_stored_member_with_a_changed_byte_fails_its_crc() -> None:
    data = _npz_with_x_bytes({800: 0x01})  # a low mantissa byte of X[200, 0]: still a finite number
    with pytest.raises(DatasetError) as info:
        parse_npz(data, limits=LIMITS)
    assert info.value.message == "X: truncated or corrupt array (Bad CRC-32 for file 'X.npy')"


def test_parse_npz_bad_crc_is_reported_before_what_the_corruption_caused() -> None:
    data = _npz_with_x_bytes({6: 0xF8, 7: 0x7F})  # X[0, 0] becomes NaN
    with pytest.raises(DatasetError, match=r"^X: truncated or corrupt array \(Bad CRC-32"):
        parse_npz(data, limits=LIMITS)


def test_parse_npz_reads_a_spooled_upload() -> None:
    with tempfile.SpooledTemporaryFile(max_size=1024) as upload:  # rolled over to a real file, as large uploads are
        upload.write(npz_bytes(X=np.ones((500, 3), dtype=np.float32), y=np.array(["b ", "a"] * 250)))
        dataset = parse_npz(upload, limits=LIMITS, dtype=np.float32)
    assert dataset.X.shape == (500, 3) and dataset.y.tolist()[:2] == ["b", "a"]
