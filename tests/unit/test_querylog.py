"""The query log reader and writer (``ragops.drift.querylog``) on real files: JSONL, gzipped JSONL
and Parquet written with pandas/pyarrow, in a file or a folder. Also ``config.parse_window``,
which turns the drift windows into durations. No model, no state store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from ragops.config import load_settings, parse_window
from ragops.drift import querylog
from ragops.errors import ConfigError, DriftError
from tests.conftest import write

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def qsettings(data_dir: Path):
    """Settings whose query log is the default <data_dir>/querylog (no state store needed)."""
    return load_settings()


def jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def texts(read: querylog.LogRead) -> list[str]:
    return [q.text for q in read.queries]


# ----------------------------------------------------------------------------------------------
# timestamps and feedback


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-10T12:00:00Z", T0),
    ("2026-01-10T14:00:00+02:00", T0),
    ("2026-01-10T07:00:00-05:00", T0),
    ("2026-01-10T12:00:00", T0),  # naive = UTC
    ("  2026-01-10T12:00:00Z ", T0),
    (T0.timestamp(), T0),  # Unix seconds, float
    (int(T0.timestamp()), T0),  # Unix seconds, int
    (dt.datetime(2026, 1, 10, 12, 0), T0),  # a naive datetime (Parquet) is UTC
])
def test_parse_time_accepts_iso_offsets_naive_and_unix_seconds(value, expected) -> None:
    got = querylog.parse_time(value)
    assert got == expected and got.tzinfo is not None  # aware, the same instant


@pytest.mark.parametrize("value", ["yesterday", "10/01/2026", "", None, True, [2026]])
def test_parse_time_rejects_what_is_not_a_time(value) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        querylog.parse_time(value)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (1, 1.0), (-1, -1.0), (0, 0.0), (0.5, 0.5), ("-2", -2.0), ("3.5", 3.5),
    (True, 1.0), (False, -1.0), ("up", 1.0), ("DOWN", -1.0), (" Up ", 1.0), ("good", 1.0), ("bad", -1.0),
    ("neutral", 0.0), ("", None),
])
def test_parse_feedback_numbers_booleans_and_words(value, expected) -> None:
    assert querylog.parse_feedback(value) == expected


@pytest.mark.parametrize("value", ["meh", "thumbs", [1], {"v": 1}])
def test_parse_feedback_rejects_other_values(value) -> None:
    with pytest.raises(ValueError, match="feedback"):
        querylog.parse_feedback(value)


# ----------------------------------------------------------------------------------------------
# reading


def test_jsonl_window_is_half_open_and_every_timestamp_form_is_understood(qsettings, tmp_path: Path) -> None:
    start, end = T0, T0 + dt.timedelta(days=1)
    log = write(tmp_path, "log/queries.jsonl", jsonl([
        {"timestamp": "2026-01-10T12:00:00Z", "query": "at the start (Z)"},  # == start: inside
        {"timestamp": "2026-01-10T20:00:00+02:00", "query": "offset +02:00"},  # 18:00Z
        {"timestamp": "2026-01-11T01:30:00", "query": "naive is UTC"},
        {"timestamp": (T0 + dt.timedelta(hours=23)).timestamp(), "query": "unix seconds"},
        {"timestamp": "2026-01-11T12:00:00Z", "query": "at the end: outside"},  # == end: outside
        {"timestamp": "2026-01-10T13:59:59+02:00", "query": "a second before start: outside"},  # 11:59:59Z
        {"timestamp": "2026-01-11T11:00:00-01:00", "query": "offset puts it at end: outside"},  # 12:00Z
        {"timestamp": int((T0 - dt.timedelta(days=3)).timestamp()), "query": "old unix seconds"},
        "",  # blank lines are not rows
    ]))
    got = querylog.read(qsettings, start, end, uri=str(log))
    # sorted by time, texts stripped; the rows outside the window are read but not returned
    assert texts(got) == ["at the start (Z)", "offset +02:00", "naive is UTC", "unix seconds"]
    assert [q.at for q in got.queries] == [T0, T0 + dt.timedelta(hours=6), T0 + dt.timedelta(hours=13, minutes=30),
                                           T0 + dt.timedelta(hours=23)]
    assert all(q.at.tzinfo is not None for q in got.queries)  # aware (an offset is kept, the instant is right)
    assert got.rows == 8 and got.invalid == 0 and got.problems == []
    assert got.files == [str(log)]
    # a wider window picks up the old row too
    wide = querylog.read(qsettings, T0 - dt.timedelta(days=7), end, uri=str(log))
    assert texts(wide)[:2] == ["old unix seconds", "a second before start: outside"] and len(wide.queries) == 6


def test_index_filter_skips_other_indexes_and_keeps_rows_without_one(qsettings, tmp_path: Path) -> None:
    log = write(tmp_path, "q.jsonl", jsonl([
        {"timestamp": "2026-01-10T12:01:00Z", "query": "for docs", "index": "docs"},
        {"timestamp": "2026-01-10T12:02:00Z", "query": "for another index", "index": "other"},
        {"timestamp": "2026-01-10T12:03:00Z", "query": "no index field"},
        {"timestamp": "2026-01-10T12:04:00Z", "query": "empty index field", "index": ""},
        {"timestamp": "2026-01-10T12:05:00Z", "query": "null index", "index": None},
    ]))
    end = T0 + dt.timedelta(hours=1)
    got = querylog.read(qsettings, T0, end, "docs", uri=str(log))
    assert texts(got) == ["for docs", "no index field", "empty index field", "null index"]
    assert got.invalid == 0  # another index's rows are skipped, not invalid
    other = querylog.read(qsettings, T0, end, "other", uri=str(log))
    assert texts(other) == ["for another index", "no index field", "empty index field", "null index"]
    everything = querylog.read(qsettings, T0, end, uri=str(log))  # no index asked: every row
    assert len(everything.queries) == 5


def test_feedback_and_answer_are_read_and_bad_feedback_skips_the_row(qsettings, tmp_path: Path) -> None:
    log = write(tmp_path, "q.jsonl", jsonl([
        {"timestamp": "2026-01-10T12:01:00Z", "query": "q1", "feedback": 1, "answer": "a1"},
        {"timestamp": "2026-01-10T12:02:00Z", "query": "q2", "feedback": -1},
        {"timestamp": "2026-01-10T12:03:00Z", "query": "q3", "feedback": True},
        {"timestamp": "2026-01-10T12:04:00Z", "query": "q4", "feedback": False},
        {"timestamp": "2026-01-10T12:05:00Z", "query": "q5", "feedback": "up"},
        {"timestamp": "2026-01-10T12:06:00Z", "query": "q6", "feedback": "down"},
        {"timestamp": "2026-01-10T12:07:00Z", "query": "q7", "feedback": "so-so"},  # invalid: skipped
        {"timestamp": "2026-01-10T12:08:00Z", "query": "q8", "answer": 42, "extra": "ignored"},
    ]))
    got = querylog.read(qsettings, T0, T0 + dt.timedelta(hours=1), uri=str(log))
    assert texts(got) == ["q1", "q2", "q3", "q4", "q5", "q6", "q8"]
    assert [q.feedback for q in got.queries] == [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, None]
    assert got.queries[0].answer == "a1" and got.queries[-1].answer is None  # a non-string answer is dropped
    assert got.invalid == 1 and got.rows == 8
    assert len(got.problems) == 1 and "q.jsonl line 7" in got.problems[0] and "so-so" in got.problems[0]


def test_invalid_rows_are_counted_with_examples_naming_file_and_line(qsettings, tmp_path: Path) -> None:
    log = write(tmp_path, "queries.jsonl", jsonl([
        {"timestamp": "2026-01-10T12:01:00Z", "query": "good one"},
        "",
        "not json at all",  # line 3
        json.dumps(["a", "list"]),  # line 4
        {"timestamp": "2026-01-10T12:02:00Z"},  # line 5: no query
        {"timestamp": "2026-01-10T12:02:00Z", "query": "   "},  # line 6: empty query
        {"timestamp": "last tuesday", "query": "bad time"},  # line 7
        {"query": "no time"},  # line 8
        {"timestamp": "2026-01-10T12:03:00Z", "query": "another good one"},
    ]))
    got = querylog.read(qsettings, T0, T0 + dt.timedelta(hours=1), uri=str(log))
    assert texts(got) == ["good one", "another good one"]
    assert got.rows == 8 and got.invalid == 6
    assert len(got.problems) == querylog.MAX_EXAMPLES == 5  # examples are capped, the count is not
    assert "queries.jsonl line 3" in got.problems[0] and "not JSON" in got.problems[0]
    assert "queries.jsonl line 4" in got.problems[1] and "not a JSON object" in got.problems[1]
    assert "queries.jsonl line 5" in got.problems[2] and "'query'" in got.problems[2]
    assert "queries.jsonl line 6" in got.problems[3] and "'query'" in got.problems[3]
    assert "queries.jsonl line 7" in got.problems[4] and "last tuesday" in got.problems[4]


def test_a_log_where_every_row_is_invalid_fails_naming_the_file_line_and_fix(qsettings, tmp_path: Path) -> None:
    log = write(tmp_path, "broken.jsonl", jsonl([{"ts": "2026-01-10T12:00:00Z", "q": "wrong field names"},
                                                 {"timestamp": "soon", "query": "bad time"}]))
    with pytest.raises(DriftError) as err:
        querylog.read(qsettings, T0, T0 + dt.timedelta(hours=1), uri=str(log))
    msg = str(err.value)
    assert "broken.jsonl line 1" in msg and "none of its 2 rows is valid" in msg
    assert "'timestamp'" in msg and "'query'" in msg  # the fix: which fields each row needs


def test_a_missing_log_reads_as_empty(qsettings, tmp_path: Path) -> None:
    got = querylog.read(qsettings, T0, T0 + dt.timedelta(days=1), uri=str(tmp_path / "nowhere"))
    assert got.queries == [] and got.files == [] and got.rows == 0 and got.invalid == 0
    # the default location (<data_dir>/querylog) does not exist either
    default = querylog.read(qsettings, T0, T0 + dt.timedelta(days=1))
    assert default.files == [] and default.queries == []


def test_a_file_of_another_type_is_refused(qsettings, tmp_path: Path) -> None:
    log = write(tmp_path, "queries.csv", "timestamp,query\n2026-01-10T12:00:00Z,hello\n")
    with pytest.raises(DriftError, match=r"unsupported file type.*\.jsonl"):
        querylog.read(qsettings, T0, T0 + dt.timedelta(days=1), uri=str(log))


def test_parquet_with_datetime_and_string_timestamps(qsettings, tmp_path: Path) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    pd.DataFrame({
        "timestamp": pd.to_datetime(["2026-01-10T12:30:00Z", "2026-01-10T18:00:00Z", "2026-01-12T00:00:00Z"]),
        "query": ["aware one", "aware two", "outside"],
        "index": ["docs", "other", "docs"],
        "feedback": [1.0, None, -1.0],
    }).to_parquet(folder / "aware.parquet")
    pd.DataFrame({
        "timestamp": pd.to_datetime(["2026-01-10T13:00:00", "2026-01-10T14:00:00"]),  # naive = UTC
        "query": ["naive one", None],  # a missing query is an invalid row
    }).to_parquet(folder / "naive.parquet")
    pd.DataFrame({
        "timestamp": ["2026-01-10T15:00:00+01:00", "never"],
        "query": ["string time", "bad time"],
        "feedback": ["down", "up"],
    }).to_parquet(folder / "strings.parquet")
    got = querylog.read(qsettings, T0, T0 + dt.timedelta(days=1), "docs", uri=str(folder))
    assert texts(got) == ["aware one", "naive one", "string time"]
    assert [q.at for q in got.queries] == [T0 + dt.timedelta(minutes=30), T0 + dt.timedelta(hours=1),
                                           T0 + dt.timedelta(hours=2)]
    assert [q.feedback for q in got.queries] == [1.0, None, -1.0]
    assert len(got.files) == 3 and got.rows == 7 and got.invalid == 2
    assert any("naive.parquet row 2" in p and "'query'" in p for p in got.problems)
    assert any("strings.parquet row 2" in p and "never" in p for p in got.problems)


def test_a_folder_reads_every_jsonl_gz_and_parquet_file_under_it(qsettings, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    write(folder, "2026-01-10.jsonl", jsonl([{"timestamp": "2026-01-10T12:10:00Z", "query": "plain jsonl"}]))
    write(folder, "old/2026-01-10.jsonl.gz", gzip.compress(jsonl([
        {"timestamp": "2026-01-10T12:20:00Z", "query": "gzipped"},
        "{broken",
    ]).encode()))
    (folder / "pq").mkdir()
    pd.DataFrame({"timestamp": ["2026-01-10T12:30:00Z"], "query": ["from parquet"]}).to_parquet(
        folder / "pq" / "part-0.parquet")
    write(folder, "notes.txt", "not a log\n")  # other suffixes are ignored
    write(folder, ".hidden/secret.jsonl", jsonl([{"timestamp": "2026-01-10T12:40:00Z", "query": "hidden"}]))
    got = querylog.read(qsettings, T0, T0 + dt.timedelta(hours=1), uri=str(folder))
    assert texts(got) == ["plain jsonl", "gzipped", "from parquet"]
    assert sorted(Path(f).name for f in got.files) == ["2026-01-10.jsonl", "2026-01-10.jsonl.gz", "part-0.parquet"]
    assert got.rows == 4 and got.invalid == 1
    assert "2026-01-10.jsonl.gz line 2" in got.problems[0]


# ----------------------------------------------------------------------------------------------
# appending


def test_append_writes_rows_that_read_returns(qsettings) -> None:
    now = dt.datetime.now(UTC)
    path = querylog.append(qsettings, [
        {"query": "how do retries work", "timestamp": (now - dt.timedelta(hours=2)).isoformat(), "index": "docs",
         "feedback": "up"},
        {"query": "what is a pool", "timestamp": now - dt.timedelta(hours=1), "feedback": -1},
        {"query": "unix time row", "timestamp": (now - dt.timedelta(minutes=30)).timestamp()},
        {"query": "no timestamp given: now"},
        {"query": "for another index", "index": "other", "timestamp": now - dt.timedelta(minutes=10)},
    ])
    assert path.startswith(qsettings.query_log_uri) and path.endswith(f"queries-{now:%Y-%m-%d}.jsonl")
    assert Path(path).exists()
    # a second append goes to the same day's file
    assert querylog.append(qsettings, [{"query": "second batch", "timestamp": now - dt.timedelta(minutes=5)}]) == path
    got = querylog.read(qsettings, now - dt.timedelta(days=1), now + dt.timedelta(minutes=1), "docs")
    assert texts(got) == ["how do retries work", "what is a pool", "unix time row", "second batch",
                          "no timestamp given: now"]
    assert [q.feedback for q in got.queries[:2]] == [1.0, -1.0]
    assert got.invalid == 0 and got.rows == 6
    # the timestamps survive the round trip (to the microsecond)
    assert got.queries[1].at == now - dt.timedelta(hours=1)
    assert abs((got.queries[-1].at - now).total_seconds()) < 60


def test_append_with_an_explicit_uri(qsettings, tmp_path: Path) -> None:
    path = querylog.append(qsettings, [{"query": "elsewhere", "timestamp": "2026-01-10T12:00:00Z"}],
                           uri=str(tmp_path / "app-log"))
    assert Path(path).parent == tmp_path / "app-log"
    got = querylog.read(qsettings, T0, T0 + dt.timedelta(seconds=1), uri=str(tmp_path / "app-log"))
    assert texts(got) == ["elsewhere"] and got.queries[0].at == T0


@pytest.mark.parametrize("row", [{"timestamp": "2026-01-10T12:00:00Z"}, {"query": ""}, {"query": "  "},
                                 {"query": 42}])
def test_append_without_a_query_fails_and_writes_nothing(qsettings, row) -> None:
    with pytest.raises(DriftError, match="'query'"):
        querylog.append(qsettings, [{"query": "fine"}, row])
    assert not Path(qsettings.query_log_uri).exists()  # the whole batch is refused


@pytest.mark.parametrize(("row", "fragment"), [
    ({"query": "fine", "timestamp": "tomorrow-ish"}, "timestamp 'tomorrow-ish'"),
    ({"query": "fine", "feedback": "meh"}, "feedback 'meh'"),
])
def test_append_with_a_bad_timestamp_or_feedback_fails_and_writes_nothing(qsettings, row, fragment) -> None:
    with pytest.raises(DriftError) as err:
        querylog.append(qsettings, [{"query": "good row"}, row])
    assert fragment in str(err.value) and "'fine'" in str(err.value)  # names the entry and the field
    assert not Path(qsettings.query_log_uri).exists()


# ----------------------------------------------------------------------------------------------
# windows


@pytest.mark.parametrize(("value", "expected"), [
    ("90m", dt.timedelta(minutes=90)), ("12h", dt.timedelta(hours=12)), ("7d", dt.timedelta(days=7)),
    ("2w", dt.timedelta(weeks=2)), (" 1D ", dt.timedelta(days=1)), ("3 h", dt.timedelta(hours=3)),
])
def test_parse_window_durations(value, expected) -> None:
    assert parse_window(value) == expected


@pytest.mark.parametrize("value", ["0d", "x", "7", "", "-1d", "1.5d", "7y", "d7"])
def test_parse_window_rejects_and_names_the_value(value) -> None:
    with pytest.raises(ConfigError) as err:
        parse_window(value, "drift.current_window")
    msg = str(err.value)
    assert repr(value) in msg and "drift.current_window" in msg and "90m, 12h, 7d or 2w" in msg


# ----------------------------------------------------------------------------------------------
# bugs found by these tests, fixed


def test_an_out_of_range_unix_timestamp_is_an_invalid_row(qsettings, tmp_path: Path) -> None:
    log = write(tmp_path, "q.jsonl", jsonl([{"timestamp": 1e20, "query": "far future"},
                                            {"timestamp": "2026-01-10T12:01:00Z", "query": "fine"}]))
    got = querylog.read(qsettings, T0, T0 + dt.timedelta(hours=1), uri=str(log))
    assert texts(got) == ["fine"] and got.invalid == 1 and "q.jsonl line 1" in got.problems[0]


def test_append_to_a_query_log_that_is_a_file(qsettings, tmp_path: Path) -> None:
    log = write(tmp_path, "app/queries.jsonl", jsonl([{"timestamp": "2026-01-10T12:00:00Z", "query": "old"}]))
    s = dataclasses.replace(qsettings, drift=dataclasses.replace(qsettings.drift, query_log=str(log)))
    querylog.append(s, [{"query": "new", "timestamp": "2026-01-10T12:05:00Z"}])
    got = querylog.read(s, T0, T0 + dt.timedelta(hours=1))
    assert texts(got) == ["old", "new"]
