"""Implausible data is refused, not loaded (issue 13): one case per finding, each on small files written in
tmp_path, asserting the exception and the words of its message (file, column, line as an editor shows it, hint)."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conrec_lib.data import dataset as data, loaders

T = 946_890_000  # 2000-01-03 09:40 UTC, a plausible unix time in seconds

CSV_HEADER = "user_id,item_id,timestamp,feedback\n"
CSV = {"interactions.csv": CSV_HEADER + f"u1,i1,{T},positive\nu1,i2,{T + 300},negative\nu2,i1,{T + 600},exposure\n"}
ML_MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation\n2,Jumanji (1995),Adventure\n"
ML_RATINGS = "userId,movieId,rating,timestamp\n"
ML_LATEST = {"ratings.csv": ML_RATINGS + f"1,1,4.0,{T}\n1,2,1.0,{T + 600}\n2,1,3.5,{T + 1200}\n",
             "movies.csv": ML_MOVIES}
U_ITEM = "".join(f"{i}|{t}|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n" for i, t in ((1, "Toy"), (2, "Heat")))
ML_100K = {"u.data": f"1\t1\t4\t{T}\n1\t2\t1\t{T + 60}\n2\t1\t3\t{T + 120}\n", "u.item": U_ITEM}
ML_1M = {"ratings.dat": f"1::1::4::{T}\n1::2::1::{T + 60}\n2::1::3::{T + 120}\n",
         "movies.dat": "1::Toy Story (1995)::Animation\n2::Jumanji (1995)::Adventure\n"}
MS = 1_649_379_600_123  # 2022-04-08, KuaiRand's unit
LIKEHATE_HEADER = "user_id\tvideo_id\ttime_ms\tlabel\n"
LIKEHATE = {"likes.tsv": LIKEHATE_HEADER + f"11\t101\t{MS}\t1\n11\t102\t{MS + 1000}\t0\n12\t101\t{MS + 2000}\t1\n"}
LOG_HEADER = "user_id,video_id,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,long_view\n"
LOG = {"log_standard_4_08_to_4_21_pure.csv": LOG_HEADER + f"7,501,{MS},1,1,0,0,0,0,0\n7,502,{MS + 1},0,0,0,0,0,1,0\n"}


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _replace(files: dict[str, str], name: str, line: int, text: str) -> dict[str, str]:
    """`files` with line `line` (1-based, as an editor shows it) of file `name` replaced by `text`."""
    lines = files[name].splitlines()
    lines[line - 1] = text
    return {**files, name: "\n".join(lines) + "\n"}


# (case, dataset name for loaders.load, files, exception, words the message must contain)
CASES = [
    # ids: the generic CSV used to map an empty user id to -1 and an empty item id to the item 'nan'
    ("csv empty user id", "csv", _replace(CSV, "interactions.csv", 3, f",i2,{T},negative"), ValueError,
     ["interactions.csv", "column 'user_id'", "line 3", "empty value", "Fill in the id or remove that line"]),
    ("csv empty item id", "csv", _replace(CSV, "interactions.csv", 4, f"u2,,{T},exposure"), ValueError,
     ["interactions.csv", "column 'item_id'", "line 4", "empty value", "Fill in the id"]),
    ("csv id of spaces", "csv", _replace(CSV, "interactions.csv", 2, f"   ,i1,{T},positive"), ValueError,
     ["interactions.csv", "column 'user_id'", "line 2", "empty value"]),
    ("csv short line", "csv", _replace(CSV, "interactions.csv", 3, "u1"), ValueError,
     ["interactions.csv", "column 'item_id'", "line 3", "a short or malformed line?"]),
    ("csv items.csv empty id", "csv", {**CSV, "items.csv": "item_id,title,category\ni1,a,c\n,b,c\ni2,b,c\n"},
     ValueError, ["items.csv", "column 'item_id'", "line 3", "empty value"]),
    ("movielens empty user id", "movielens", _replace(ML_LATEST, "ratings.csv", 3, f",2,1.0,{T}"), ValueError,
     ["ratings.csv", "column 'userId' must hold whole numbers", "line 3", "an empty value"]),
    ("csv empty feedback", "csv", _replace(CSV, "interactions.csv", 2, f"u1,i1,{T},"), ValueError,
     ["interactions.csv", "column 'feedback' must be one of", "line 2", "an empty value",
      "Fix or remove that line"]),
    # times: milliseconds used to load (notebook 01 then reported 8,094,278 days)
    ("csv milliseconds", "csv", _replace(CSV, "interactions.csv", 2, f"u1,i1,{T * 1000},positive"), ValueError,
     ["interactions.csv", "column 'timestamp'", "unix seconds from 1990 to 2100", "line 2", f"{T * 1000}",
      "it looks like milliseconds (2000-01-03): divide by 1000"]),
    ("csv microseconds", "csv", _replace(CSV, "interactions.csv", 4, f"u2,i1,{T * 10 ** 6},exposure"), ValueError,
     ["interactions.csv", "column 'timestamp'", "line 4", "it looks like microseconds", "divide by 1000000"]),
    ("csv zero time", "csv", _replace(CSV, "interactions.csv", 3, "u1,i2,0,negative"), ValueError,
     ["interactions.csv", "column 'timestamp'", "line 3 has 0", "no time unit puts it in 1990 .. 2100",
      "Fix or remove that line"]),
    ("csv year 2200", "csv", _replace(CSV, "interactions.csv", 3, "u1,i2,7258118400,negative"), ValueError,
     ["interactions.csv", "column 'timestamp'", "line 3 has 7258118400", "no time unit puts it in"]),
    ("csv empty time", "csv", _replace(CSV, "interactions.csv", 3, "u1,i2,,negative"), ValueError,
     ["interactions.csv", "column 'timestamp' must hold whole numbers", "line 3", "an empty value"]),
    # a time beyond int64 used to wrap round to -9223372036854775808
    ("csv time beyond int64", "csv", _replace(CSV, "interactions.csv", 3, "u1,i2,99999999999999999999,negative"),
     ValueError, ["interactions.csv", "column 'timestamp'", "too large for a 64-bit integer", "line 3",
                  "'99999999999999999999'", "Fix or remove that line"]),
    ("csv time beyond int64, within uint64", "csv",
     _replace(CSV, "interactions.csv", 2, "u1,i1,10000000000000000000,positive"), ValueError,
     ["interactions.csv", "column 'timestamp'", "too large for a 64-bit integer", "line 2", "10000000000000000000"]),
    ("movielens-latest milliseconds", "movielens", _replace(ML_LATEST, "ratings.csv", 3, f"1,2,1.0,{T * 1000}"),
     ValueError, ["ratings.csv", "column 'timestamp'", "line 3", "it looks like milliseconds", "divide by 1000"]),
    ("movielens-100k milliseconds", "movielens", _replace(ML_100K, "u.data", 1, f"1\t1\t4\t{T * 1000}"), ValueError,
     ["u.data", "column 'timestamp'", "line 1", "it looks like milliseconds"]),
    ("movielens-1m milliseconds", "movielens", _replace(ML_1M, "ratings.dat", 2, f"1::2::1::{T * 1000}"), ValueError,
     ["ratings.dat", "column 'timestamp'", "line 2", "it looks like milliseconds"]),
    ("movielens-1m blank line before the bad one", "movielens",
     {**ML_1M, "ratings.dat": f"1::1::4::{T}\n\n1::2::1::{T * 1000}\n"}, ValueError,
     ["ratings.dat", "column 'timestamp'", "line 3", "milliseconds"]),
    ("movielens-1m beyond int64", "movielens", _replace(ML_1M, "ratings.dat", 3, "2::1::3::99999999999999999999"),
     ValueError, ["ratings.dat", "column 'timestamp'", "too large for a 64-bit integer", "line 3"]),
    ("kuairand like/hate seconds", "kuairand", _replace(LIKEHATE, "likes.tsv", 3, f"11\t102\t{MS // 1000}\t0"),
     ValueError, ["likes.tsv", "column 'time_ms'", "unix milliseconds", "line 3",
                  "it looks like seconds (2022-04-08): multiply by 1000"]),
    ("kuairand like/hate microseconds", "kuairand", _replace(LIKEHATE, "likes.tsv", 2, f"11\t101\t{MS * 1000}\t1"),
     ValueError, ["likes.tsv", "column 'time_ms'", "line 2", "it looks like microseconds", "divide by 1000"]),
    ("kuairand log seconds", "kuairand", _replace(LOG, "log_standard_4_08_to_4_21_pure.csv", 2,
                                                  f"7,501,{MS // 1000},1,1,0,0,0,0,0"), ValueError,
     ["log_standard_4_08_to_4_21_pure.csv", "column 'time_ms'", "line 2", "multiply by 1000"]),
    ("kuairand like/hate label 2", "kuairand", _replace(LIKEHATE, "likes.tsv", 4, f"12\t101\t{MS}\t2"), ValueError,
     ["likes.tsv", "column 'label' must be 0 (hate) or 1 (like)", "found [2]", "line 4"]),
    # ratings: a 1-10 scale used to load for MovieLens layouts (94% became positive)
    ("movielens-latest 1-10 scale", "movielens", _replace(ML_LATEST, "ratings.csv", 3, f"1,2,8,{T + 600}"),
     ValueError, ["ratings.csv", "column 'rating'", "half stars 0.5, 1.0, .., 5.0", "line 3 has '8.0'",
                  "another scale (e.g. 1 .. 10)", "convert the file to this scale"]),
    ("movielens-latest rating 0", "movielens", _replace(ML_LATEST, "ratings.csv", 2, f"1,1,0,{T}"), ValueError,
     ["ratings.csv", "column 'rating'", "line 2 has '0.0'"]),
    ("movielens-latest quarter star", "movielens", _replace(ML_LATEST, "ratings.csv", 4, f"2,1,3.25,{T}"), ValueError,
     ["ratings.csv", "column 'rating'", "line 4 has '3.25'"]),
    ("movielens-100k half star", "movielens", _replace(ML_100K, "u.data", 2, f"1\t2\t1.5\t{T}"), ValueError,
     ["u.data", "column 'rating'", "whole stars 1 .. 5", "line 2"]),
    ("movielens-100k 1-10 scale", "movielens", _replace(ML_100K, "u.data", 3, f"2\t1\t10\t{T}"), ValueError,
     ["u.data", "column 'rating'", "whole stars 1 .. 5", "line 3 has '10'"]),
    ("movielens-1m 1-10 scale", "movielens", _replace(ML_1M, "ratings.dat", 1, f"1::1::7::{T}"), ValueError,
     ["ratings.dat", "column 'rating'", "whole stars 1 .. 5", "line 1 has '7'"]),
    ("movielens-latest duplicate rows above the bad line", "movielens",
     {**ML_LATEST, "ratings.csv": ML_RATINGS + f"1,1,4.0,{T}\n1,1,4.0,{T}\n1,2,1.0,{T}\n1,2,9.0,{T}\n"}, ValueError,
     ["ratings.csv", "column 'rating'", "line 5 has '9.0'"]),
    # a folder holding two layouts used to load whichever was looked for first
    ("movielens-latest + csv in one folder", "movielens", {**ML_LATEST, **CSV}, ValueError,
     ["holds the files of 2 layouts", "movielens-latest", "csv: interactions.csv", "ambiguous",
      "Keep one dataset per folder"]),
    ("csv + movielens-latest, asked for csv", "csv", {**ML_LATEST, **CSV}, ValueError,
     ["holds the files of 2 layouts", "movielens-latest", "Keep one dataset per folder"]),
    ("ml-100k + ml-1m in one folder", "movielens", {**ML_100K, **ML_1M}, ValueError,
     ["holds the files of 2 layouts", "movielens-100k", "movielens-1m"]),
    ("kuairand log + like/hate in one folder", "kuairand", {**LOG, **LIKEHATE}, ValueError,
     ["holds the files of 2 layouts", "kuairand-log", "kuairand-likehate"]),
]


@pytest.mark.parametrize("case, name, files, error, words", CASES, ids=[c[0] for c in CASES])
def test_bad_file_is_refused_with_a_message_that_says_where_and_what_to_do(tmp_path, case, name, files, error,
                                                                           words):
    folder = _write(tmp_path / "data", files)
    with pytest.raises(error) as caught:
        loaders.load(name, folder, **({"progress": False} if "log" in case else {}))
    message = str(caught.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{missing} not in: {message}"
    if any(f in message for f in files):  # the file is named by its path, not only its name
        assert str(folder) in message


@pytest.mark.parametrize("name, files", [("csv", CSV), ("movielens", ML_LATEST), ("movielens", ML_100K),
                                         ("movielens", ML_1M), ("kuairand", LIKEHATE)])
def test_the_valid_bases_of_the_table_load(tmp_path, name, files):
    ds = loaders.load(name, _write(tmp_path / "data", files))
    assert (ds.n_users, len(ds.interactions)) == (2, 3)


def test_csv_ids_are_text_as_written(tmp_path):
    rows = [("007", "007", T), ("7", "7", T + 1), ("NA", "None", T + 2), ("7", "007", T + 3)]
    text = CSV_HEADER + "".join(f"{u},{i},{t},positive\n" for u, i, t in rows)
    ds = loaders.load("csv", _write(tmp_path / "data", {"interactions.csv": text}))
    assert ds.items["raw_id"].tolist() == ["007", "7", "None"]  # '007' and '7' are two items, 'None' is an id
    assert ds.n_users == 3 and ds.interactions["user_id"].tolist() == [0, 1, 2, 1]  # 'NA' is a user
    assert ds.interactions["item_id"].tolist() == [0, 1, 2, 0]


def test_csv_ids_lose_surrounding_spaces(tmp_path):
    text = CSV_HEADER + f"7 ,a,{T},positive\n7,a ,{T + 1},negative\n"
    ds = loaders.load("csv", _write(tmp_path / "data", {"interactions.csv": text}))
    assert (ds.n_users, ds.n_items) == (1, 1)  # '7 ' is '7', 'a ' is 'a'


def test_csv_numeric_looking_ids_match_items_csv_as_text(tmp_path):
    files = {"interactions.csv": CSV_HEADER + f"1,007,{T},positive\n1,7,{T + 1},negative\n",
             "items.csv": "item_id,title,category\n7,seven,a\n007,double-oh seven,b\n"}
    items = loaders.load("csv", _write(tmp_path / "data", files)).items.set_index("raw_id")
    assert items.loc["007", "title"] == "double-oh seven" and items.loc["7", "title"] == "seven"


# --- data.Dataset: user and item ids are contiguous 0..n-1 --------------------------------------------

def _dataset(user_ids, item_ids, n_items=3, items_order=None) -> data.Dataset:
    m = len(user_ids)
    inter = pd.DataFrame({"user_id": np.array(user_ids, np.int64), "item_id": np.array(item_ids, np.int64),
                          "timestamp": np.arange(m, dtype=np.int64), "day": np.zeros(m, np.int64),
                          "feedback": "positive", "raw_label": "test"})
    order = np.arange(n_items) if items_order is None else np.array(items_order)
    items = pd.DataFrame({"item_id": order.astype(np.int64), "raw_id": [f"i{i}" for i in order],
                          "title": "t", "category": "c"})
    return data.Dataset("hand", inter, items, licence="test", citation="test")


@pytest.mark.parametrize("user_ids, item_ids, options, words", [
    ([0, 2, 2], [0, 1, 2], {}, ["interactions.user_id must be 0..n_users-1 without gaps", "ids up to 2",
                                "no row has user 1", "data.reindex()"]),
    ([-1, 0, 1], [0, 1, 2], {}, ["interactions.user_id must be 0..n_users-1", "negative id -1", "data.reindex()"]),
    ([1, 2, 3], [0, 1, 2], {}, ["no row has user 0"]),
    ([0, 1, 1], [0, 5, 2], {}, ["interactions.item_id has 5, outside 0..2", "rows of the items table"]),
    ([0, 1, 1], [0, -1, 2], {}, ["interactions.item_id has -1, outside 0..2"]),
    ([0, 1, 1], [0, 1, 2], {"items_order": [0, 2, 1]}, ["items.item_id must be 0..n_items-1 in row order",
                                                         "row 1 has 2", "data.reindex()"]),
], ids=["user gap", "negative user", "users from 1", "item beyond the table", "negative item", "items out of order"])
def test_dataset_refuses_ids_that_are_not_contiguous(user_ids, item_ids, options, words):
    with pytest.raises(ValueError) as caught:
        _dataset(user_ids, item_ids, **options)
    missing = [w for w in words if w not in str(caught.value)]
    assert not missing, f"{missing} not in: {caught.value}"


def test_dataset_accepts_contiguous_ids_and_unused_items():
    ds = _dataset([1, 0, 1], [0, 0, 1], n_items=4)  # item 3 has no interaction: the catalogue may be larger
    assert (ds.n_users, ds.n_items) == (2, 4)


def test_every_case_message_names_a_line_or_a_layout():
    for case, _, _, _, words in CASES:
        assert any(re.search(r"line \d+|layouts", w) for w in words), case
