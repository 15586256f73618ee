"""Ingest gate hardening: what the landing area accepts, memory, exact values, clear and
content-free messages, and a seeded fuzz of the gate (real GX and DVC, no mocks)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pytest

from airloop.fileio import to_csv_bytes
from airloop.ingest import (
    BatchRejected,
    committed_batches,
    find_pending_batches,
    ingest_batch,
    max_batch_bytes,
)
from airloop.settings import DEFAULT_MAX_BATCH_BYTES, get_settings
from airloop.spec import example_data
from airloop.validation import MAX_EXCERPT, read_typed

datagen = example_data("late_delivery")

MAX_BATCH_BYTES_ENV = "AIRLOOP_MAX_BATCH_BYTES"

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2024, 3, 1)
NAME = datagen.batch_filename(DAY)


def _landing(settings, spec) -> Path:
    path = settings.landing_dir / spec.dataset.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clean_bytes(day: dt.date = DAY, orders: int = 300) -> bytes:
    return to_csv_bytes(datagen.generate_orders(day, orders_per_day=orders))


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging if the code under test blocks (e.g. opening a FIFO)."""
    def expired(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _nothing_published(settings, spec) -> None:
    assert committed_batches(spec.events, settings)[1] == []
    assert not list(settings.offline_dir.rglob("*.parquet"))


# --- the landing area takes regular files only ---------------------------------------------


def test_link_to_a_valid_batch_outside_the_landing_area_is_refused_and_moved_once(
    settings, demo_spec, tmp_path, monkeypatch
):
    outside = tmp_path / "elsewhere" / NAME
    outside.parent.mkdir()
    outside.write_bytes(_clean_bytes())
    link = _landing(settings, demo_spec) / NAME
    link.symlink_to(outside)

    assert find_pending_batches(demo_spec, settings) == [link]
    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(demo_spec, link, settings)

    message = str(rejected.value)
    assert repr(NAME) in message and "symbolic link" in message
    failure, = rejected.value.validation.failures
    assert failure.expectation == "expect_file_to_be_a_regular_file"
    # The link itself moved to quarantine, still pointing where it did; the target is untouched.
    quarantined = rejected.value.quarantined
    assert quarantined.parent == settings.quarantine_dir / "orders"
    assert quarantined.is_symlink() and os.readlink(quarantined) == str(outside)
    assert not os.path.lexists(link) and outside.read_bytes() == _clean_bytes()
    record = json.loads(quarantined.with_suffix(".validation.json").read_text())
    assert record["success"] is False and record["failures"][0]["expectation"] == failure.expectation
    _nothing_published(settings, demo_spec)
    assert find_pending_batches(demo_spec, settings) == []  # refused once, not retried


def _make_fifo(path: Path, tmp_path: Path) -> None:
    os.mkfifo(path)


def _make_directory(path: Path, tmp_path: Path) -> None:
    path.mkdir()
    (path / "inner.csv").write_bytes(_clean_bytes())


def _make_link_to_dev_zero(path: Path, tmp_path: Path) -> None:
    path.symlink_to("/dev/zero")


def _make_zero_device(path: Path, tmp_path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("creating device nodes needs root")


def _make_socket(path: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock, contextlib.chdir(path.parent):
        sock.bind(path.name)  # relative: socket paths are limited to ~108 bytes


SPECIAL_ENTRIES = {
    "fifo": (_make_fifo, stat.S_ISFIFO, "FIFO"),
    "directory": (_make_directory, stat.S_ISDIR, "directory"),
    "link_to_dev_zero": (_make_link_to_dev_zero, stat.S_ISLNK, "symbolic link"),
    "zero_device": (_make_zero_device, stat.S_ISCHR, "character device"),
    "socket": (_make_socket, stat.S_ISSOCK, "socket"),
}


@pytest.mark.parametrize("kind", SPECIAL_ENTRIES)
def test_special_entries_are_refused_unopened_and_moved_out_once(settings, demo_spec, tmp_path, monkeypatch, kind):
    # Were such an entry read after all, the limit keeps the damage small instead of hanging.
    monkeypatch.setenv(MAX_BATCH_BYTES_ENV, str(1 << 20))
    settings = get_settings()  # the same home, with the new limit
    make, is_kind, wording = SPECIAL_ENTRIES[kind]
    entry = _landing(settings, demo_spec) / NAME
    make(entry, tmp_path)

    with _deadline(30):
        assert find_pending_batches(demo_spec, settings) == [entry]
        with pytest.raises(BatchRejected) as rejected:
            ingest_batch(demo_spec, entry, settings)
        assert find_pending_batches(demo_spec, settings) == []

    assert repr(NAME) in str(rejected.value) and wording in str(rejected.value)
    assert "was not opened" in str(rejected.value)
    assert not os.path.lexists(entry)
    assert is_kind(os.lstat(rejected.value.quarantined).st_mode)  # the entry itself moved
    assert rejected.value.quarantined.with_suffix(".validation.json").is_file()
    _nothing_published(settings, demo_spec)


def test_entry_that_cannot_move_to_quarantine_is_recorded_and_not_picked_again(
    settings, demo_spec, monkeypatch
):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(settings.landing_dir).st_dev:
        pytest.skip("needs /dev/shm on another file system than the landing area")
    quarantine = shm / f"airloop-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AIRLOOP_QUARANTINE_DIR", str(quarantine))
    from airloop.settings import get_settings

    settings = get_settings()
    landing = _landing(settings, demo_spec)
    fifo = landing / NAME
    os.mkfifo(fifo)
    link = landing / datagen.batch_filename(DAY + dt.timedelta(days=1))
    link.symlink_to("/dev/zero")
    try:
        with _deadline(30):
            with pytest.raises(BatchRejected) as kept:
                ingest_batch(demo_spec, fifo, settings)
            with pytest.raises(BatchRejected) as moved:
                ingest_batch(demo_spec, link, settings)
            # A FIFO cannot be copied across file systems without opening it: it stays, recorded.
            assert kept.value.quarantined == fifo and stat.S_ISFIFO(os.lstat(fifo).st_mode)
            # A link is re-created from its text there, never followed.
            assert moved.value.quarantined.is_symlink() and not os.path.lexists(link)
            assert os.readlink(moved.value.quarantined) == "/dev/zero"
            assert find_pending_batches(demo_spec, settings) == []
            # A new delivery under the same name is a new file: it is picked up again.
            fifo.unlink()
            fifo.write_bytes(_clean_bytes())
            assert find_pending_batches(demo_spec, settings) == [fifo]
    finally:
        shutil.rmtree(quarantine, ignore_errors=True)


def test_batch_over_the_size_limit_is_refused_before_it_is_parsed(settings, demo_spec, monkeypatch):
    import airloop.ingest

    data = _clean_bytes()
    monkeypatch.setenv(MAX_BATCH_BYTES_ENV, str(len(data) - 1))
    settings = get_settings()  # the same home, with the new limit
    monkeypatch.setattr(airloop.ingest, "run_validation", lambda *a, **k: pytest.fail("parsed"))
    path = _landing(settings, demo_spec) / NAME
    path.write_bytes(data)

    assert find_pending_batches(demo_spec, settings) == [path]
    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(demo_spec, path, settings)

    failure, = rejected.value.validation.failures
    assert failure.expectation == "expect_file_size_to_be_within_limit"
    assert f"has {len(data):,} bytes, over the limit of {len(data) - 1:,} bytes" in failure.detail
    assert MAX_BATCH_BYTES_ENV in failure.detail
    assert rejected.value.quarantined.read_bytes() == data and not path.exists()
    _nothing_published(settings, demo_spec)
    assert find_pending_batches(demo_spec, settings) == []


def test_batch_at_the_size_limit_is_ingested(settings, demo_spec, monkeypatch):
    data = _clean_bytes()
    monkeypatch.setenv(MAX_BATCH_BYTES_ENV, str(len(data)))
    settings = get_settings()  # the same home, with the new limit
    path = _landing(settings, demo_spec) / NAME
    path.write_bytes(data)

    result = ingest_batch(demo_spec, path, settings)

    assert result.rows == len(pd.read_parquet(result.offline_path)) > 0
    # The private copy the batch was read from does not linger in the data workspace.
    assert not list(settings.dvc_workspace.rglob("*.tmp"))


def test_max_batch_bytes_reads_one_variable_with_a_default(monkeypatch):
    monkeypatch.delenv(MAX_BATCH_BYTES_ENV, raising=False)
    assert max_batch_bytes() == DEFAULT_MAX_BATCH_BYTES == 256 * 1024 * 1024
    monkeypatch.setenv(MAX_BATCH_BYTES_ENV, " ")
    assert max_batch_bytes() == DEFAULT_MAX_BATCH_BYTES
    monkeypatch.setenv(MAX_BATCH_BYTES_ENV, "1000")
    assert max_batch_bytes() == 1000
    for bad in ("0", "-5", "1e6", "lots"):
        monkeypatch.setenv(MAX_BATCH_BYTES_ENV, bad)
        with pytest.raises(ValueError, match=MAX_BATCH_BYTES_ENV):
            max_batch_bytes()


def test_path_outside_the_landing_folder_is_refused_untouched(settings, demo_spec, tmp_path):
    outside = tmp_path / NAME
    outside.write_bytes(_clean_bytes())
    with pytest.raises(ValueError, match="not in the landing folder"):
        ingest_batch(demo_spec, outside, settings)
    assert outside.read_bytes() == _clean_bytes()
    assert not list(settings.quarantine_dir.rglob("*"))


# --- nothing of a rejected file travels beyond short excerpts ------------------------------

TOKEN = "AKIAZX81TOKENqq7dQp2"
SECRETS = (
    f"aws_access_key_id={TOKEN},aws_secret_access_key=wJalrXUtnFEMI/K7MDENG\n"
    "password=hunter2,user=admin\n"
    "db_password=s3cr3t,host=10.0.0.5\n"
).encode()
# A value only a long excerpt could leak: its distinctive tail starts after MAX_EXCERPT chars.
LONG_TOKEN = "x" * MAX_EXCERPT + "TAILTOKEN3f9a"


def _with_cell(data: bytes, column: str, value: str, row: int = 3) -> bytes:
    lines = data.decode().split("\n")
    index = lines[0].split(",").index(column)
    cells = lines[row].split(",")
    cells[index] = value
    lines[row] = ",".join(cells)
    return "\n".join(lines).encode()


def _alert_text(exc: BaseException) -> str:
    """What the ingest DAG's failure notifier writes to alerts.jsonl for this rejection."""
    from airflow.sdk.exceptions import AirflowFailException

    from airloop.notifiers import AlertLogNotifier, read_alerts

    AlertLogNotifier(title="late_delivery: batch rejected").notify({"exception": AirflowFailException(str(exc))})
    return json.dumps(read_alerts())


@pytest.mark.parametrize("delivery", ["secrets_file", "link_to_secrets", "long_value_in_float",
                                      "long_unknown_category"])
def test_rejected_content_never_reaches_messages_records_logs_or_alerts(
    settings, demo_spec, tmp_path, caplog, delivery
):
    landing = _landing(settings, demo_spec)
    path = landing / NAME
    token = TOKEN
    if delivery == "secrets_file":
        path.write_bytes(SECRETS)
    elif delivery == "link_to_secrets":
        (tmp_path / "credentials").write_bytes(SECRETS)
        path.symlink_to(tmp_path / "credentials")
    elif delivery == "long_value_in_float":  # fails layer 1
        path.write_bytes(_with_cell(_clean_bytes(), "promised_minutes", LONG_TOKEN))
        token = LONG_TOKEN
    else:  # a string that fails the GX category rule
        path.write_bytes(_with_cell(_clean_bytes(), "zone", LONG_TOKEN))
        token = LONG_TOKEN
    caplog.set_level(logging.DEBUG)

    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(demo_spec, path, settings)

    quarantined = rejected.value.quarantined
    assert token.encode() in Path(os.path.realpath(quarantined)).read_bytes()  # the data did hold it
    message = str(rejected.value)
    record = Path(rejected.value.validation.result_json).read_text()
    seen = {
        "message": message,
        "record": record,
        "quarantined record": quarantined.with_suffix(".validation.json").read_text(),
        "logs": caplog.text,
        "alerts": _alert_text(rejected.value),
    }
    assert {where: token in text for where, text in seen.items()} == dict.fromkeys(seen, False)
    if delivery.startswith("long_"):  # the offending value is named by a short excerpt
        column = "promised_minutes" if delivery == "long_value_in_float" else "zone"
        failure = next(f for f in rejected.value.validation.failures if f.column == column)
        assert failure.examples == [f"{LONG_TOKEN[:MAX_EXCERPT]!r}...(+13)"]
    else:
        assert "password" not in message and "aws_" not in message


# --- values are exact or refused -----------------------------------------------------------


@pytest.mark.parametrize("column, value, wording", [
    ("restaurant_id", "99999999999999999999", "outside the int64 range"),
    ("restaurant_id", "9223372036854775808", "outside the int64 range"),
    ("restaurant_id", "-9223372036854775809", "outside the int64 range"),
    ("items", "1" + "0" * 30, "outside the int64 range"),
    ("promised_minutes", "inf", "infinite, NaN"),
    ("promised_minutes", "-Infinity", "infinite, NaN"),
    ("promised_minutes", "1e999", "infinite, NaN"),
    ("promised_minutes", "nan", "infinite, NaN"),
    ("restaurant_id", "1e3", "are not int"),
    ("restaurant_id", " 7", "are not int"),
    ("distance_km", "1_0", "are not float"),
])
def test_values_that_do_not_fit_are_refused_with_the_column_named(demo_spec, column, value, wording):
    frame, failures = read_typed(demo_spec.events, _with_cell(_clean_bytes(), column, value))

    assert frame is None
    failure, = failures
    assert failure.column == column and failure.expectation == "expect_column_values_to_be_of_type"
    assert wording in failure.detail and "first at line 4" in failure.detail
    assert failure.examples == [repr(value)]


@pytest.mark.parametrize("column, value, expected", [
    ("restaurant_id", "9223372036854775807", 2**63 - 1),
    ("restaurant_id", "-9223372036854775808", -(2**63)),
    ("restaurant_id", "+0009223372036854775807", 2**63 - 1),
    ("restaurant_id", "9007199254740993", 2**53 + 1),  # not representable as float64
    ("restaurant_id", "42.000", 42),
    ("promised_minutes", "1.7976931348623157e308", 1.7976931348623157e308),
    ("promised_minutes", "-0.5e-3", -0.0005),
])
def test_values_at_the_edges_are_kept_exactly(demo_spec, column, value, expected):
    frame, failures = read_typed(demo_spec.events, _with_cell(_clean_bytes(), column, value))

    assert failures == []
    stored = frame[column].loc[4]  # the index is the line number
    assert type(expected)(stored) == expected and str(frame[column].dtype) in ("int64", "float64")


def test_huge_ids_and_infinities_are_quarantined_not_stored(settings, demo_spec):
    """The reviewer's probe: these used to be stored as -9223372036854775808 and inf."""
    data = _with_cell(_clean_bytes(), "restaurant_id", "99999999999999999999")
    data = _with_cell(data, "promised_minutes", "inf", row=5)
    path = _landing(settings, demo_spec) / NAME
    path.write_bytes(data)

    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(demo_spec, path, settings)

    assert {f.column for f in rejected.value.validation.failures} == {"restaurant_id", "promised_minutes"}
    assert "restaurant_id: expect_column_values_to_be_of_type" in str(rejected.value)
    _nothing_published(settings, demo_spec)


# --- header problems say what they are -----------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    ("\ufefforder_id", "order_id: expect_table_columns_to_match_set - the file starts with a UTF-8 BOM "
                       "(byte order mark) before the header 'order_id'; save it as UTF-8 without a BOM"),
    ("order_id ", "order_id: expect_table_columns_to_match_set - header 'order_id ' has trailing whitespace"),
    ("\torder_id", "order_id: expect_table_columns_to_match_set - header '\\torder_id' has leading whitespace"),
])
def test_bom_and_whitespace_in_the_header_are_named(demo_spec, header, expected):
    data = _clean_bytes()
    frame, failures = read_typed(demo_spec.events, header.encode() + data[len("order_id"):])

    assert frame is None
    assert [f.describe() for f in failures] == [expected]  # not a missing + undeclared pair


def test_a_header_sharing_no_column_is_not_quoted(demo_spec):
    frame, failures = read_typed(demo_spec.events, SECRETS)

    failure, = failures
    assert failure.column is None and failure.examples == []
    assert "none of the 11 declared columns" in failure.detail and "not shown" in failure.detail
    assert TOKEN not in failure.describe()


# --- memory ----------------------------------------------------------------------------------


def test_reading_a_batch_peaks_within_three_times_its_size(tmp_path):
    """Peak RSS of read_typed on a 20 MB batch, in a fresh process: <= 3x size + 80 MiB.

    The reader this replaced peaked at ~20x the file size (~400 MiB here).
    """
    path = tmp_path / NAME
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from bench.bench_ingest import measure, write_batch
        size = write_batch(Path({str(path)!r}), 20)
        print(json.dumps({{"size": size, **measure("airloop", Path({str(path)!r}))}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True,
                          text=True, timeout=300)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    used = (figures["peak_mib"] - figures["before_mib"]) * 2**20

    assert figures["failures"] == [] and figures["rows"] > 200_000
    assert used <= 3 * figures["size"] + 80 * 2**20, figures


# --- fuzz: every batch is stored intact or refused with its column named ---------------------

INT_VALUES = ["99999999999999999999", "9223372036854775808", "-9223372036854775809", "1" + "0" * 25,
              "9223372036854775807", "-9223372036854775808", "007", "+5", "3.0", "-0", "1e3", "0x1F",
              "1.5", "", "١٢", " 5"]
FLOAT_VALUES = ["inf", "-inf", "Infinity", "nan", "NaN", "1e999", "-1e999", "1e-400", "1e308", "+.5",
                "5.", "-0.0", "1_0", "1.2.3", "", "0.1", "12e-2"]
TIMESTAMP_VALUES = ["2024-03-01", "2024-13-01T00:00:00Z", "yesterday", "2024-03-01T25:00:00Z",
                    "2024-03-01T10:00:00+02:00", "3000-01-01T00:00:00Z", "", "2024-03-01 07:30:00"]
WORDS = ["abc", "--1", "½", "north ", "NULL", "None", "true", "Center"]
WEIRD_BYTES = [b"\xff", b"\xc3\x28", b"\x00", b"\x01", b"\xe2\x80\x8b", b"\xed\xa0\x80",
               b"\xf0\x9f\x92\xa9", b"\x7f"]
MUTATIONS = ["wrong_type", "int_edge", "float_edge", "timestamp", "empty", "weird_bytes", "extra_column",
             "missing_column", "bom", "header_space", "ragged", "open_quote"]
STRUCTURAL = {"ragged", "open_quote"}
# The column kinds a mutation applies to (absent: any column).
DECLARED = ("string", "int", "float", "timestamp")
TARGETS = {"wrong_type": ("int", "float", "timestamp"), "int_edge": ("int",), "float_edge": ("float",),
           "timestamp": ("timestamp",), "missing_column": DECLARED, "header_space": DECLARED}


def _rows(data: bytes) -> list[list[bytes]]:
    return [line.split(b",") for line in data.split(b"\n") if line]


def _mutate(rng: random.Random, rows: list[list[bytes]], columns: dict[str, str]) -> tuple[bytes, list]:
    """Apply 1-2 random mutations; returns the bytes and [(mutation, column or None)]."""
    rows = [list(r) for r in rows]
    prefix, applied = b"", []
    for _ in range(rng.choice([1, 1, 2])):
        kind = rng.choice(MUTATIONS)
        header = [h.decode().strip() for h in rows[0]]
        eligible = [c for c in header if kind not in TARGETS or columns.get(c) in TARGETS[kind]]
        if not eligible:
            continue
        column = rng.choice(eligible)
        col = header.index(column)
        row = rng.randrange(1, len(rows))
        if kind == "wrong_type":
            rows[row][col] = rng.choice(WORDS).encode()
        elif kind == "int_edge":
            rows[row][col] = rng.choice(INT_VALUES).encode()
        elif kind == "float_edge":
            rows[row][col] = rng.choice(FLOAT_VALUES).encode()
        elif kind == "timestamp":
            rows[row][col] = rng.choice(TIMESTAMP_VALUES).encode()
        elif kind == "empty":
            rows[row][col] = b""
        elif kind == "weird_bytes":
            cell = rows[row][col]
            at = rng.randrange(len(cell) + 1)
            rows[row][col] = cell[:at] + rng.choice(WEIRD_BYTES) + cell[at:]
        elif kind == "extra_column":
            column = rng.choice(["extra", "Zone", "order_id2", "notes", "ÿ"])
            for r in rows:
                r.append(column.encode() if r is rows[0] else str(rng.random()).encode())
        elif kind == "missing_column":
            for r in rows:
                del r[col:col + 1]  # a ragged row may be short of it already
        elif kind == "bom" and not prefix:
            prefix = b"\xef\xbb\xbf"  # its column is the first one once all mutations are done
        elif kind == "header_space":
            rows[0][col] = rng.choice([b" ", b"\t"]) * rng.choice([0, 1]) + rows[0][col] + b" "
        elif kind == "ragged":
            rows[row] = rows[row][:-1]
            column = None
        elif kind == "open_quote":
            rows[row][col] = b'"' + rows[row][col]
            column = None
        else:
            continue
        applied.append((kind, column))
    first = rows[0][0].decode().strip()
    applied = [(kind, first if kind == "bom" else column) for kind, column in applied]
    return prefix + b"\n".join(b",".join(r) for r in rows) + b"\n", applied


def _expected_cell(text: bytes, kind: str):
    """What a cell must read as if accepted, or raise ValueError if it must be refused.

    Independent of the reader: Python ints for the int64 range, float() for floats.
    """
    value = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if "\x00" in value:
        raise ValueError("NUL")
    if value == "":
        return None
    if kind == "string":
        return value
    if kind == "timestamp":
        return pd.to_datetime(value, utc=True, format="ISO8601")  # pandas' ISO 8601 is the contract
    if not value.isascii() or not set(value) <= set("0123456789+-.eE") or value[-1:] in "eE+-":
        raise ValueError(value)
    if kind == "float":
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    whole, _, fraction = value.partition(".")
    if "e" in value.lower() or fraction.strip("0") or not whole.lstrip("+-").isdigit():
        raise ValueError(value)
    number = int(whole)
    if not -(2**63) <= number < 2**63:
        raise ValueError(value)
    return number


def _same(stored, expected) -> bool:
    if expected is None:
        return pd.isna(stored)
    if isinstance(expected, pd.Timestamp):
        return stored == expected
    return type(expected)(stored) == expected


def _check_outcome(spec, data: bytes, applied: list, frame, failures) -> None:
    """Accepted intact, or refused with the offending column named."""
    columns = spec.dataset.columns
    mutated = {column for _, column in applied if column}
    if frame is not None:
        assert not STRUCTURAL & {kind for kind, _ in applied}, applied
        assert not {"extra_column", "missing_column", "bom", "header_space"} & {k for k, _ in applied}
        rows = _rows(data)
        header = [h.decode() for h in rows[0]]
        assert list(frame.columns) == list(columns) and len(frame) == len(rows) - 1
        for line, row in enumerate(rows[1:], start=2):
            for column, kind in columns.items():
                stored = frame[column].loc[line]
                expected = _expected_cell(row[header.index(column)], kind)  # raises if it must fail
                assert _same(stored, expected), (applied, column, line, stored, expected)
        return
    assert failures
    for failure in failures:
        named = set((failure.column or "").split(", ")) | {c for c in mutated if repr(c) in failure.describe()}
        explained = named & mutated or (
            failure.column is None and STRUCTURAL & {kind for kind, _ in applied} and "line" in failure.describe()
        )
        assert explained, (applied, failure.describe())


def test_fuzzed_batches_are_read_intact_or_refused_with_the_column_named(demo_spec):
    """Layer 1 (read_typed) on 800 seeded mutations of a valid batch."""
    rng = random.Random(20240301)
    rows = _rows(_clean_bytes(orders=20))
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(800):
        data, applied = _mutate(rng, rows, demo_spec.dataset.columns)
        frame, failures = read_typed(demo_spec.events, data)
        try:
            _check_outcome(demo_spec, data, applied, frame, failures)
        except (AssertionError, ValueError) as exc:
            raise AssertionError(f"{applied}: {exc!r}\n{data[:300]!r}") from exc
        outcomes["accepted" if frame is not None else "refused"] += 1
    assert min(outcomes.values()) > 100, outcomes  # both outcomes well exercised


def test_fuzzed_batches_through_the_whole_gate(settings, demo_spec):
    """A handful through ingest_batch (GX rules, DVC, the offline store) with the same oracle."""
    rng = random.Random(7)
    landing = _landing(settings, demo_spec)
    outcomes = []
    for i in range(8):
        day = DAY + dt.timedelta(days=i)
        rows = _rows(_clean_bytes(day=day, orders=150))
        data, applied = _mutate(rng, rows, demo_spec.dataset.columns)
        if i < 2:  # at least two that should pass: an empty optional cell, an exact edge value
            rows[3][rows[0].index(b"promised_minutes")] = [b"", b"1e308"][i]
            data, applied = b"\n".join(b",".join(r) for r in rows) + b"\n", [("empty", "promised_minutes")]
        path = landing / datagen.batch_filename(day)
        path.write_bytes(data)
        try:
            result = ingest_batch(demo_spec, path, settings)
        except BatchRejected as rejected:
            assert rejected.quarantined.read_bytes() == data
            _check_outcome(demo_spec, data, applied, None, rejected.validation.failures)
            outcomes.append("refused")
        else:
            stored = pd.read_parquet(result.offline_path)
            stored.index = range(2, len(stored) + 2)  # line numbers, as read_typed indexes rows
            _check_outcome(demo_spec, data, applied, stored, [])
            outcomes.append("accepted")
    assert {"accepted", "refused"} <= set(outcomes), outcomes
