"""Loaders on small fixtures in every format, on the real files bundled in data/, on bad inputs, and
`download` against a local HTTP server on 127.0.0.1 (never the internet)."""
import dataclasses
import functools
import hashlib
import http.server
import io
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from conrec_lib import runs
from conrec_lib.data import dataset as data, download, loaders

FIXTURES = Path(__file__).parent / "fixtures"
KUAIRAND_REAL = loaders.bundled("kuairand")
MOVIELENS_REAL = loaders.bundled("movielens")


def _copy(name: str, tmp_path: Path) -> Path:
    """A writable copy of a fixture folder."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def _n_users_with_negatives(ds: data.Dataset) -> int:
    return ds.interactions.loc[ds.interactions["feedback"] == "negative", "user_id"].nunique()


# --- fixtures, one per format ------------------------------------------------------------------------

@pytest.mark.parametrize("folder, layout", [
    ("kuairand_likehate", "kuairand-likehate"), ("kuairand_log", "kuairand-log"),
    ("ml_latest_small", "movielens-latest"), ("ml_100k", "movielens-100k"), ("ml_1m", "movielens-1m"),
    ("generic_csv", "csv")])
def test_detect_layout_of_each_fixture(folder, layout):
    assert loaders.detect_layout(FIXTURES / folder) == layout


def test_kuairand_likehate_fixture():
    ds = loaders.load("kuairand", FIXTURES / "kuairand_likehate")
    assert (ds.n_users, ds.n_items, ds.n_days) == (3, 17, 14)  # 2022-04-08 .. 04-21, Beijing days
    assert ds.counts() == {"positive": 17, "negative": 7, "exposure": 0}
    assert _n_users_with_negatives(ds) == 2  # user 333 has only likes and is kept
    assert ds.text_is_standin and "CC BY-SA 4.0" in ds.licence and "10.1145/3511808.3557624" in ds.citation
    items = ds.items.set_index("raw_id")
    assert items.loc["1001", "title"] == "video 1001, 45 s long" and items.loc["1001", "category"] == "30-60 s"
    assert items.loc["1003", "title"] == "video 1003, length unknown"  # duration_ms = 0 in the log
    # 2022-04-09 07:00 Beijing is 04-08 23:00 UTC: day 1 in Beijing days (day 0 in UTC days)
    row = ds.interactions[ds.interactions["item_id"] == items.index.get_loc("1003")]
    assert row["day"].tolist() == [1] and set(ds.interactions["raw_label"]) == {"label=0", "label=1"}


def test_kuairand_log_fixture_maps_signals():
    ds = loaders.load("kuairand", FIXTURES / "kuairand_log", progress=False)
    assert ds.counts() == {"positive": 8, "negative": 5, "exposure": 10}  # see the fixture's rows
    labels = ds.interactions.groupby("raw_label")["feedback"].first()
    assert labels["is_hate+is_like"] == "negative"  # hate wins over like
    assert labels["is_click"] == "exposure" and labels["none"] == "exposure"  # a click alone is no positive
    assert labels["long_view+is_click"] == labels["is_follow"] == labels["is_forward"] == "positive"
    items = ds.items.set_index("raw_id")
    assert items.loc["501", "category"] == "tag 12" and items.loc["501", "title"].endswith("tags 12, 65")
    assert items.loc["507", "category"] == "over 5 min"  # not in video_features_basic: length bucket
    assert len(loaders.load("kuairand", FIXTURES / "kuairand_log", logs="standard", progress=False).interactions) == 20
    assert len(loaders.load("kuairand", FIXTURES / "kuairand_log", logs="random", progress=False).interactions) == 3


@pytest.mark.parametrize("folder, shape, counts", [
    ("ml_latest_small", (4, 13), {"positive": 10, "negative": 8, "exposure": 8}),
    ("ml_100k", (3, 6), {"positive": 5, "negative": 5, "exposure": 2}),
    ("ml_1m", (3, 6), {"positive": 4, "negative": 4, "exposure": 2})])
def test_movielens_fixtures(folder, shape, counts):
    ds = loaders.load("movielens", FIXTURES / folder)
    assert (ds.n_users, ds.n_items) == shape and ds.counts() == counts
    assert not ds.text_is_standin and "GroupLens" in ds.licence and "10.1145/2827872" in ds.citation
    r = ds.interactions["raw_label"].str.removeprefix("rating=").astype(float)
    fb = ds.interactions["feedback"]
    assert (fb[r <= 2] == "negative").all() and (fb[r >= 4] == "positive").all()
    assert (fb[(r > 2) & (r < 4)] == "exposure").all()


def test_movielens_titles_and_categories():
    latest = loaders.load("movielens", FIXTURES / "ml_latest_small").items.set_index("raw_id")
    assert latest.loc["1", "title"] == "Toy Story (1995); genres: Adventure, Animation, Children, Comedy, Fantasy"
    assert latest.loc["1", "category"] == "Adventure"  # the first listed genre
    assert latest.loc["11", "title"].startswith("American President, The (1995)")  # quoted comma
    assert latest.loc["13", "category"] == "none" and "14" not in latest.index  # unrated movie dropped
    ml100k = loaders.load("movielens", FIXTURES / "ml_100k").items.set_index("raw_id")
    assert ml100k.loc["4", "title"] == "Misérables, Les (1995); genres: Drama, Musical"  # latin-1
    ml1m = loaders.load("movielens", FIXTURES / "ml_1m").items.set_index("raw_id")
    assert ml1m.loc["260", "title"].startswith("Star Wars: Episode IV - A New Hope (1977); genres: Action")
    assert ml1m.loc["3612", "title"].startswith("Café au Lait")


def test_generic_csv_fixture():
    ds = loaders.load("csv", FIXTURES / "generic_csv", dataset_name="shop", licence="CC0", citation="none")
    assert (ds.name, ds.licence, ds.attributes) == ("shop", "CC0", ("brand",))
    assert (ds.n_users, ds.n_items) == (3, 6) and ds.counts() == {"positive": 5, "negative": 4, "exposure": 3}
    assert _n_users_with_negatives(ds) == 2  # carol has no negative and is kept
    assert ds.items.set_index("raw_id").loc["sku-3", "title"] == "bulky leather hiking boots"
    assert not ds.text_is_standin and set(ds.interactions["raw_label"]) == set(data.FEEDBACK)


def test_generic_csv_without_items_uses_standin_text(tmp_path):
    folder = _copy("generic_csv", tmp_path)
    (folder / "items.csv").unlink()
    ds = loaders.load("csv", folder)
    assert ds.text_is_standin and ds.items.set_index("raw_id").loc["sku-1", "title"] == "item sku-1"


def test_load_simulated_passes_options():
    simulate = pytest.importorskip("conrec_lib.data.simulate", reason="conrec_lib/data/simulate.py is not written yet")
    ds = loaders.load("simulated", seed=0, scale="tiny")
    ref = simulate.simulate(simulate.SimConfig(seed=0, scale="tiny"))
    pd.testing.assert_frame_equal(ds.interactions, ref.interactions)


# --- the real files bundled in data/ ----------------------------------------------------------------

def test_real_kuairand_like_hate_matches_source_md():
    raw = pd.read_csv(KUAIRAND_REAL / "processed_standard_kcore_15.tsv", sep="\t")
    assert raw["label"].value_counts().to_dict() == {1: 33_745, 0: 8_083}  # SOURCE.md, rows as published
    start = time.perf_counter()
    with pytest.warns(loaders.DuplicateRowsWarning, match="dropped 116 exact duplicate rows"):
        ds = loaders.load("kuairand", KUAIRAND_REAL)
    print(f"KuaiRand like/hate loaded in {time.perf_counter() - start:.2f} s")
    assert (ds.n_users, ds.n_items, ds.n_days) == (664, 9_359, 15)
    dup = raw[raw.duplicated()]["label"].value_counts()  # 80 hates and 36 likes were logged twice
    assert ds.counts() == {"positive": 33_745 - dup[1], "negative": 8_083 - dup[0], "exposure": 0}
    assert _n_users_with_negatives(ds) == 664  # SOURCE.md: every user has at least one hate
    assert ds.items["raw_id"].astype(int).is_monotonic_increasing  # numeric ids keep their numeric order


def test_real_movielens_matches_source_md():
    start = time.perf_counter()
    ds = loaders.load("movielens", MOVIELENS_REAL)
    print(f"MovieLens ml-latest-small loaded in {time.perf_counter() - start:.2f} s")
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (610, 9_724, 100_836)
    # SOURCE.md rating counts: <= 2.0 -> 13,523; >= 4.0 -> 26,818 + 8,551 + 13,211; the rest 2.5 .. 3.5
    assert ds.counts() == {"negative": 13_523, "positive": 48_580, "exposure": 5_550 + 20_047 + 13_136}
    assert _n_users_with_negatives(ds) == 526
    assert ds.items["raw_id"].astype(int).is_monotonic_increasing  # numeric ids keep their numeric order


# --- bad inputs: each gets an error naming the file / column and what to do ----------------------------

def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are .*simulated.*kuairand.*movielens.*csv"):
        loaders.load("netflix", FIXTURES / "ml_1m")


def test_wrong_path_and_file_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_folder.*no such folder"):
        loaders.load("movielens", tmp_path / "no_such_folder")
    with pytest.raises(NotADirectoryError, match="pass the folder that holds it"):
        loaders.load("movielens", FIXTURES / "ml_1m" / "ratings.dat")
    with pytest.raises(ValueError, match="needs `path`"):
        loaders.load("movielens")


def test_folder_without_a_layout_says_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"log_standard.*ratings\.csv.*u\.data.*Found \['data', 'notes.txt'\]"
                                                r".*try .*data"):
        loaders.detect_layout(tmp_path)


def test_layout_of_another_dataset_is_refused():
    with pytest.raises(ValueError, match="movielens-100k.*load\\('movielens'"):
        loaders.load("kuairand", FIXTURES / "ml_100k")


def test_unknown_option_and_path_for_the_simulator():
    with pytest.raises(TypeError, match="takes the options \\['logs', 'progress'\\], not \\['colour'\\]"):
        loaders.load("kuairand", FIXTURES / "kuairand_log", colour="red")
    with pytest.raises(ValueError, match="pass no path"):
        loaders.load("simulated", FIXTURES / "ml_1m")


def test_missing_column_names_file_and_column(tmp_path):
    folder = _copy("ml_latest_small", tmp_path)
    ratings = pd.read_csv(folder / "ratings.csv").drop(columns="rating")
    ratings.to_csv(folder / "ratings.csv", index=False)
    with pytest.raises(ValueError, match=r"ratings\.csv: missing column\(s\) \['rating'\]"):
        loaders.load("movielens", folder)


def test_bad_type_names_the_line(tmp_path):
    folder = _copy("ml_latest_small", tmp_path)
    lines = (folder / "ratings.csv").read_text().splitlines()
    lines[2] = "1,2,1.0,yesterday"
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"ratings\.csv: column 'timestamp' must hold whole numbers; line 3 has "
                                         r"'yesterday'"):
        loaders.load("movielens", folder)


def test_non_numeric_kuairand_time(tmp_path):
    folder = _copy("kuairand_likehate", tmp_path)
    path = folder / "processed_standard_kcore_15.tsv"
    path.write_text(path.read_text().replace("1649379600123", "2022-04-08T09:00", 1))
    with pytest.raises(ValueError, match="column 'time_ms' must hold whole numbers; line 2"):
        loaders.load("kuairand", folder)


@pytest.mark.parametrize("content, message", [("", "the file is empty"),
                                              ("userId,movieId,rating,timestamp\n", "no data rows"),
                                              ("userId,movieId,rating,timestamp\n1,2,3.0,4,5,6\n1,2\n",
                                               "could not parse")])
def test_empty_header_only_and_malformed_files(tmp_path, content, message):
    folder = _copy("ml_latest_small", tmp_path)
    (folder / "ratings.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        loaders.load("movielens", folder)


def test_malformed_dat_line(tmp_path):
    folder = _copy("ml_1m", tmp_path)
    with open(folder / "ratings.dat", "a") as fh:
        fh.write("4::1193\n")
    with pytest.raises(ValueError, match=r"ratings\.dat: line 11 does not have the 4 '::'-separated fields"):
        loaders.load("movielens", folder)


def test_duplicate_rows_are_dropped_with_a_warning(tmp_path):
    folder = _copy("ml_latest_small", tmp_path)
    lines = (folder / "ratings.csv").read_text().splitlines()
    (folder / "ratings.csv").write_text("\n".join(lines + lines[1:3]) + "\n")
    with pytest.warns(loaders.DuplicateRowsWarning, match="dropped 2 exact duplicate rows"):
        ds = loaders.load("movielens", folder)
    assert ds.counts() == loaders.load("movielens", FIXTURES / "ml_latest_small").counts()


def test_bad_labels_and_feedback_values(tmp_path):
    folder = _copy("kuairand_likehate", tmp_path)
    path = folder / "processed_standard_kcore_15.tsv"
    df = pd.read_csv(path, sep="\t")
    df.loc[3, "label"] = 2
    df.to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"'label' must be 0 \(hate\) or 1 \(like\); found \[2\]"):
        loaders.load("kuairand", folder)
    folder = _copy("generic_csv", tmp_path)
    path = folder / "interactions.csv"
    path.write_text(path.read_text().replace("negative", "dislike", 1))
    with pytest.raises(ValueError, match="'feedback' must be one of .*line 3 has 'dislike'"):
        loaders.load("csv", folder)


def test_csv_items_must_cover_interactions(tmp_path):
    folder = _copy("generic_csv", tmp_path)
    items = pd.read_csv(folder / "items.csv")
    items[items["item_id"] != "sku-6"].to_csv(folder / "items.csv", index=False)
    with pytest.raises(ValueError, match=r"items\.csv: 1 interacted items are not listed, e\.g\. \['sku-6'\]"):
        loaders.load("csv", folder)


# --- download, against a local server on 127.0.0.1 ---------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (a free port) from a thread; yield (base URL, www folder)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/archive.zip"  # nothing listens there any more: connection refused


def _zip(folder: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{top}/{path.name}")
    return buf.getvalue()


def _set_source(monkeypatch, key: str, **changes) -> None:
    monkeypatch.setitem(download.SOURCES, key, dataclasses.replace(download.SOURCES[key], **changes))


def test_download_verifies_size_unpacks_and_is_idempotent(server, tmp_path, monkeypatch):
    base, www = server
    blob = _zip(FIXTURES / "ml_latest_small", "ml-latest-small")
    (www / "ml-latest-small.zip").write_bytes(blob)
    _set_source(monkeypatch, "ml-latest-small", size=len(blob))  # this source has no published checksum
    dest = tmp_path / "raw"
    path = download.download("movielens", dest, url=f"{base}/ml-latest-small.zip", progress=False)
    assert path == dest / "ml-latest-small" and loaders.load("movielens", path).counts()["negative"] == 8
    assert sorted(p.name for p in dest.iterdir()) == ["ml-latest-small"]  # archive and temp folder gone
    marker = runs.read_json(path / download.MARKER)
    assert marker["size"] == len(blob) and marker["sha256"] == hashlib.sha256(blob).hexdigest()
    # second call: verified folder found, nothing fetched (the URL would be refused)
    assert download.download("ml-latest-small", dest, url=_closed_port_url(), progress=False) == path


def test_download_verifies_md5_of_a_tar_gz(server, tmp_path, monkeypatch):
    base, www = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in sorted((FIXTURES / "kuairand_log").iterdir()):
            tf.add(path, f"KuaiRand-Pure/data/{path.name}")
    (www / "KuaiRand-Pure.tar.gz").write_bytes(buf.getvalue())
    _set_source(monkeypatch, "kuairand-pure", md5=hashlib.md5(buf.getvalue()).hexdigest())
    path = download.download("kuairand-pure", tmp_path / "raw", url=f"{base}/KuaiRand-Pure.tar.gz", progress=False)
    assert path == tmp_path / "raw" / "KuaiRand-Pure" / "data"
    assert len(loaders.load("kuairand", path, progress=False).interactions) == 23


def test_checksum_mismatch_keeps_nothing(server, tmp_path, monkeypatch):
    base, www = server
    (www / "ml-100k.zip").write_bytes(_zip(FIXTURES / "ml_100k", "ml-100k"))
    _set_source(monkeypatch, "ml-100k", md5="0" * 32)
    dest = tmp_path / "raw"
    with pytest.raises(loaders.ChecksumError, match="published md5 is 0000"):
        download.download("ml-100k", dest, url=f"{base}/ml-100k.zip", progress=False)
    assert list(dest.iterdir()) == []  # no archive, no temp file, no folder
    _set_source(monkeypatch, "ml-latest-small", size=1)
    (www / "ml-latest-small.zip").write_bytes(_zip(FIXTURES / "ml_latest_small", "ml-latest-small"))
    with pytest.raises(loaders.ChecksumError, match="bytes but 1 expected"):
        download.download("ml-latest-small", dest, url=f"{base}/ml-latest-small.zip", progress=False)
    assert list(dest.iterdir()) == []


def test_offline_refused_connection_and_http_error(server, tmp_path):
    base, _ = server
    with pytest.raises(ConnectionError, match="could not reach .*you appear to be offline.*DATA_PATH="):
        download.download("ml-1m", tmp_path / "raw", url=_closed_port_url(), progress=False)
    with pytest.raises(ConnectionError, match="HTTP 404"):
        download.download("ml-1m", tmp_path / "raw", url=f"{base}/missing.zip", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []


def test_download_refuses_unknown_names_and_unverified_folders(tmp_path):
    with pytest.raises(ValueError, match="unknown download 'ml-25m'; use one of .*ml-100k"):
        download.download("ml-25m", tmp_path)
    (tmp_path / "ml-1m").mkdir()
    with pytest.raises(FileExistsError, match="was not written by download"):
        download.download("ml-1m", tmp_path, url=_closed_port_url(), progress=False)


def test_every_source_is_official_and_verifiable():
    for key, src in download.SOURCES.items():
        assert src.url.startswith(("https://files.grouplens.org/", "https://zenodo.org/records/10439422/")), key
        assert src.md5 is not None or src.size is not None, key


@pytest.mark.parametrize("name", sorted(loaders.BUNDLED))
def test_bundled_copies_match_their_checksums_and_carry_a_licence(name):
    folder = loaders.bundled(name, verify=True)
    assert (folder / "SOURCE.md").is_file()
    assert (folder / "LICENSE.txt").is_file() or "Usage License" in (folder / "README.txt").read_text()


def test_a_changed_bundled_file_is_named_by_the_checksum_check(tmp_path):
    folder = Path(shutil.copytree(loaders.bundled("movielens"), tmp_path / "ml"))
    (folder / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(loaders.ChecksumError, match="movies.csv: sha256 .* restore it"):
        loaders.verify_checksums(folder)


def test_no_bundled_copy_of_download_only_data():
    with pytest.raises(ValueError, match="may not be redistributed"):
        loaders.bundled("ml-1m")


def test_one_dataset_registry_serves_the_loaders_notebook_01_and_notebook_06():
    from conrec_lib.data import dataprep
    from conrec_lib.evaluation import comparisons

    entries = list(loaders.REGISTRY.values())
    assert len({e.label for e in entries}) == len(entries)  # one label per dataset
    assert dataprep.DATASETS == loaders.NAMES == tuple(loaders.REGISTRY)
    assert comparisons.DATASETS == ("simulator", "kuairand", "movielens")
    assert {comparisons.LOADER[label] for label in comparisons.DATASETS} <= set(loaders.NAMES)
    for name, folder in loaders.BUNDLED.items():
        assert loaders.bundled(name) == loaders.DATA_ROOT / folder
    assert dataprep.DataConfig("movielens", path="x").split_config().mode == "per_user"
    assert dataprep.DataConfig().split_config().mode == "global"
    with pytest.raises(ValueError, match="notebook 06 knows"):
        loaders.by_label("taobao")
