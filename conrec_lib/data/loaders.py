"""Load the simulator and the real datasets (KuaiRand, MovieLens, your own CSV) into `data.Dataset`.

`load(name, path)` detects the layout of `path` from the files in it (`detect_layout`), so one call reads
the copies bundled in `data/` (`bundled(name)`) and the folders that `download.download(name)` writes into `data/raw/`.

Feedback mapping (issue 2, item 3; the paper's negatives are explicit "not interested" clicks):
- KuaiRand logs: `is_hate = 1` -> negative; else any of like, follow, comment, forward, long_view -> positive;
  else exposure (a plain `is_click` is an exposure). `raw_label` lists the signals that were set.
- KuaiRand like/hate subset: `label = 0` (hate) -> negative, `label = 1` (like) -> positive; it has no exposures.
- MovieLens: rating <= 2 -> negative, rating >= 4 -> positive, else (2.5 .. 3.5) exposure.
- Generic CSV: the `feedback` column as given (see `_load_csv` for the exact layout).

Choices that hold for every format:
- Exact duplicate rows (every column read is equal) are dropped, and a `DuplicateRowsWarning` says how many.
  The bundled KuaiRand subset has 116 (80 hates, 36 likes): the same user, video, millisecond and signals
  logged twice. Rows that differ in any column (e.g. the same video seen twice) are kept.
- Users without any negative are kept: their positives are still history. `splits.make_split` gives an
  example only to users who have a negative in the future window.
- `timestamp` is unix seconds (KuaiRand's `time_ms // 1000`; rows keep their millisecond order).
  `day` counts calendar days in the source's time zone, 0 = the day of the first interaction: Beijing
  (UTC+8) for KuaiRand, whose logs are Beijing days, and UTC for MovieLens and CSV.
- KuaiRand has no item text: items get a stand-in title and category (see `_kuairand_items`) and the
  dataset has `text_is_standin=True`; later notebooks may use collaborative embeddings instead.

Implausible data is refused, not loaded (issue 13): every error names the file, the column, the line as an
editor shows it (the header is line 1) and what to do.
- Ids: KuaiRand and MovieLens define their ids as whole numbers, read as such (their numeric order fixes the
  item order the notebooks' numbers depend on). The generic CSV reads its ids as text exactly as written
  ('007' and '7' are two ids, 'NA' is an id); an empty id is refused everywhere.
- Times: unix times must fall in 1990..2100 (`PLAUSIBLE_YEARS`); a value that fits another unit gets a hint
  such as "it looks like milliseconds: divide by 1000". A whole number beyond 64 bits is refused.
- Ratings: each MovieLens layout has its own star scale (`MOVIELENS_STARS`); a rating off it is refused.
- A folder holding the files of two layouts is refused: which dataset to load would be a guess.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from conrec_lib import runs
from conrec_lib.data import dataset as data


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One dataset the tutorial knows: the one place to add a dataset (with its reader in LAYOUTS/READERS)."""

    name: str  # `load(name)`, notebook 01's DATASET
    label: str  # its name in notebook 06's tables ("simulator" reads better there than "simulated")
    split_mode: str  # "global", or "per_user" where users rate in one session (MovieLens)
    embedder: str  # notebook 06's SID encoder for it ("collaborative" where item text is a stand-in)
    bundled: Optional[str] = None  # folder under data/ holding the redistributable copy
    compared: bool = True  # one of notebook 06's datasets


REGISTRY = {entry.name: entry for entry in (
    DatasetEntry("simulated", "simulator", "global", "tfidf"),
    DatasetEntry("kuairand", "kuairand", "global", "collaborative", bundled="kuairand-27k-like-hate-kcore15"),
    DatasetEntry("movielens", "movielens", "per_user", "tfidf", bundled="movielens-ml-latest-small"),
    DatasetEntry("csv", "csv", "global", "auto", compared=False),
)}
NAMES = tuple(REGISTRY)


def by_label(label: str) -> DatasetEntry:
    """The entry notebook 06 calls `label` ("simulator", "kuairand", "movielens").

    >>> by_label("simulator").name
    'simulated'
    """
    for entry in REGISTRY.values():
        if entry.label == label:
            return entry
    raise ValueError(f"unknown dataset {label!r}; notebook 06 knows {[e.label for e in REGISTRY.values()]}")

KUAIRAND_LICENCE = ("CC BY-SA 4.0 (KuaiRand, https://kuairand.com): give attribution and share derived data "
                    "under the same licence")
KUAIRAND_CITATION = ("Chongming Gao, Shijun Li, Yuan Zhang, Jiawei Chen, Biao Li, Wenqiang Lei, Peng Jiang, "
                     "Xiangnan He. KuaiRand: An Unbiased Sequential Recommendation Dataset with Randomly "
                     "Exposed Videos. CIKM 2022. doi:10.1145/3511808.3557624")
MOVIELENS_LICENCE = ("GroupLens research-use licence: research use only, no endorsement by UMN/GroupLens implied, "
                     "cite Harper & Konstan 2015, no commercial use without permission; ml-100k and ml-1m may "
                     "not be redistributed")
MOVIELENS_CITATION = ("F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and "
                      "Context. ACM TiiS 5, 4: 19:1-19:19. doi:10.1145/2827872")

BEIJING_UTC_OFFSET_H = 8
KUAIRAND_POSITIVE = ("is_like", "is_follow", "is_comment", "is_forward", "long_view")
KUAIRAND_SIGNALS = ("is_hate", *KUAIRAND_POSITIVE, "is_click")  # order of the names in raw_label
PLAUSIBLE_YEARS = (1990, 2100)  # interaction logs start after 1990; later than 2100 is a unit or typing error
TIME_UNITS = (("seconds", 1), ("milliseconds", 1_000), ("microseconds", 1_000_000), ("nanoseconds", 1_000_000_000))
MOVIELENS_STARS = {  # the rating scale of each layout (the README of each release)
    "movielens-latest": (np.arange(1, 11) / 2, "half stars 0.5, 1.0, .., 5.0"),
    "movielens-100k": (np.arange(1, 6), "whole stars 1 .. 5"),
    "movielens-1m": (np.arange(1, 6), "whole stars 1 .. 5"),
}
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                 "Thriller", "War", "Western")  # the 19 flag columns of u.item (ml-100k README, u.genre)


class DuplicateRowsWarning(UserWarning):
    """A source file had exact duplicate rows; they were dropped (the message gives the count)."""


class ChecksumError(ValueError):
    """A downloaded file does not have the published checksum (or size)."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """A file layout `detect_layout` recognises, the `load` name it belongs to, and what marks it."""

    family: str
    marker: str


LAYOUTS = {
    "kuairand-log": Layout("kuairand", "log_standard_*.csv or log_random_*.csv (official KuaiRand logs)"),
    "movielens-latest": Layout("movielens", "ratings.csv + movies.csv (ml-latest-small)"),
    "movielens-100k": Layout("movielens", "u.data + u.item (ml-100k)"),
    "movielens-1m": Layout("movielens", "ratings.dat + movies.dat (ml-1m)"),
    "csv": Layout("csv", "interactions.csv, optionally items.csv (generic CSV)"),
    "kuairand-likehate": Layout("kuairand", "one .tsv/.csv whose header has user_id, video_id, time_ms, label "
                                            "(KuaiRand like/hate subset)"),
}


# --- the copies bundled with the project (data/README.md) -----------------------------------------

DATA_ROOT = runs.project_root() / "data"  # the repository's data/ folder
BUNDLED = {name: entry.bundled for name, entry in REGISTRY.items() if entry.bundled}


def bundled(name: str, verify: bool = False) -> Path:
    """The folder of the redistributable copy of dataset `name` shipped in `data/` (checked against its
    SHA256SUMS when `verify`)."""
    if name not in BUNDLED:
        raise ValueError(f"no bundled copy of {name!r}: bundled datasets are {sorted(BUNDLED)} (ml-100k and "
                         "ml-1m may not be redistributed: use conrec_lib.data.download.download)")
    folder = DATA_ROOT / BUNDLED[name]
    if not (folder / "SHA256SUMS").is_file():
        raise FileNotFoundError(f"{folder}: the bundled {name} data is missing (its SHA256SUMS is not there); "
                                "restore data/ from the repository (git checkout -- data) or pass a DATA_PATH")
    if verify:
        verify_checksums(folder)
    return folder


def verify_checksums(folder: Path) -> None:
    """Raise ChecksumError naming the file when a file listed in `folder/SHA256SUMS` differs."""
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        expected, name = line.split()
        got = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if got != expected:
            raise ChecksumError(f"{folder / name}: sha256 {got} but SHA256SUMS lists {expected}; the file was "
                                "changed or damaged: restore it with git checkout -- data")


# --- entry point -----------------------------------------------------------------------------------

def load(name: str, path: str | Path | None = None, **options) -> data.Dataset:
    """Load dataset `name` ("simulated", "kuairand", "movielens" or "csv") from the folder `path`.

    "simulated" takes no path; `options` go to `simulate.SimConfig` (e.g. seed=0, scale="tiny").
    The other names read the folder's detected layout; `options` go to its reader (KuaiRand logs:
    `logs="all" | "standard" | "random"`, `progress`; CSV: `dataset_name`, `licence`, `citation`).
    """
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names are {NAMES}")
    if name == "simulated":
        if path is not None:
            raise ValueError(f"the simulator generates its data: pass no path (got {path!r}), only "
                             "SimConfig options such as seed=0")
        from conrec_lib.data import simulate

        return simulate.simulate(simulate.SimConfig(**options))
    if path is None:
        raise ValueError(f"load({name!r}) needs `path`, the folder holding its files: e.g. "
                         f"loaders.bundled({name!r}) for the copy in data/, or the folder returned by download.download(...)")
    layout = detect_layout(path)
    if LAYOUTS[layout].family != name:
        raise ValueError(f"{path}: you asked for {name!r} but the folder holds the {layout!r} layout "
                         f"({LAYOUTS[layout].marker}); call load({LAYOUTS[layout].family!r}, ...) instead")
    accepted = list(inspect.signature(READERS[layout]).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"load({name!r}): the {layout!r} layout takes the options {accepted}, not {unknown}")
    return READERS[layout](Path(path), **options)


def _check_folder(path: str | Path) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder (absolute: {folder.resolve()}); check DATA_PATH, or "
                                "download the dataset with conrec_lib.data.download.download(...)")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; pass the folder that holds it: {folder.parent}")
    return folder


def detect_layout(path: str | Path) -> str:
    """Name of the layout (a key of `LAYOUTS`) of the files in folder `path`; raise if none or several match."""
    folder = _check_folder(path)
    layouts = _layouts_in(folder)
    if len(layouts) == 1:
        return layouts[0]
    if layouts:
        listed = "; ".join(f"{k}: {LAYOUTS[k].marker}" for k in layouts)
        raise ValueError(f"{folder}: holds the files of {len(layouts)} layouts ({listed}), so which dataset to "
                         "load is ambiguous. Keep one dataset per folder: move the other files into a folder "
                         "of their own")
    found = sorted(p.name for p in folder.iterdir())[:12]
    looked = "; ".join(f"{k}: {v.marker}" for k, v in LAYOUTS.items())
    hint = f" It has a data/ sub-folder: try {folder / 'data'}." if (folder / "data").is_dir() else ""
    raise FileNotFoundError(f"{folder}: no recognised dataset layout. Looked for {looked}. "
                            f"Found {found}.{hint}")


def _layouts_in(folder: Path) -> list[str]:
    """Every layout (keys of `LAYOUTS`) whose marker files are in `folder`."""
    has = lambda *names: all((folder / n).is_file() for n in names)  # noqa: E731
    found = ["kuairand-log"] if [*folder.glob("log_standard_*.csv"), *folder.glob("log_random_*.csv")] else []
    for layout, files in (("movielens-latest", ("ratings.csv", "movies.csv")),
                          ("movielens-100k", ("u.data", "u.item")),
                          ("movielens-1m", ("ratings.dat", "movies.dat")),
                          ("csv", ("interactions.csv",))):
        if has(*files):
            found.append(layout)
    return found + (["kuairand-likehate"] if _likehate_files(folder) else [])


# --- reading one file with errors that say what to fix ---------------------------------------------

def _read(path: Path, *, sep: str = ",", required: tuple[str, ...] = (), integer: tuple[str, ...] = (),
          ids: tuple[str, ...] = (), names: Optional[list[str]] = None, encoding: str = "utf-8", usecols=None,
          dtype=None) -> pd.DataFrame:
    """Read one delimited file; check it is non-empty, parses, has `required` columns, `integer` whole numbers.

    `ids` are columns of ids kept as text as written ('007' stays '007'; surrounding spaces dropped); with them no cell of the file
    is read as missing except an empty one, and an empty id is refused.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; the folder's layout needs it")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); download or export it again")
    try:
        with warnings.catch_warnings():  # a row longer than the header must not silently become an index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep=sep, header=None if names else "infer", names=names, encoding=encoding,
                             usecols=usecols, index_col=False, dtype={**(dtype or {}), **dict.fromkeys(ids, str)},
                             na_filter=not ids)
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: could not parse it as {sep!r}-separated text ({err}); the file may be "
                         "truncated or not in the expected format") from err
    if df.empty:
        raise ValueError(f"{path}: no data rows (only a header?); download or export it again")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
                         f"The file needs the columns {list(required)}")
    for col in ids:
        _no_empty_ids(df[col], path, col)
        df[col] = df[col].str.strip()  # '7 ' is the id '7' (a stray space in an export), '007' stays '007'
    for col in integer:
        df[col] = _whole_numbers(df[col], path, col, header=names is None)
    return df


def _line(values: pd.Series, row: int, header: bool) -> int:
    """The line of position `row` of `values` as an editor shows it: 1-based, the header is line 1.

    The index holds the 0-based data line (a fresh frame's RangeIndex, `_read_dat`'s file lines), so check
    a frame before dropping or sorting rows.
    """
    return int(values.index[row]) + 1 + header


def _first(bad: pd.Series) -> int:
    """Position of the first True in a boolean Series."""
    return int(np.flatnonzero(bad.to_numpy())[0])


def _no_empty_ids(values: pd.Series, path: Path, col: str, header: bool = True) -> None:
    """Raise naming the first line whose id is empty (or only spaces)."""
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        line = _line(values, _first(empty), header)
        raise ValueError(f"{path}: column {col!r} needs an id on every line; line {line} has an empty value "
                         "(a short or malformed line?). Fill in the id or remove that line")


def _whole_numbers(values: pd.Series, path: Path, col: str, header: bool = True) -> pd.Series:
    """`values` as int64; raise naming the first line that is empty, not a number, not whole, or beyond 64 bits."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers != np.floor(numbers))
    if bad.any():
        row = _first(bad)
        raise ValueError(f"{path}: column {col!r} must hold whole numbers; line {_line(values, row, header)} has "
                         f"{_shown(values.iloc[row])}. Fix or remove that line")
    if pd.api.types.is_signed_integer_dtype(numbers):
        too_big = pd.Series(False, index=numbers.index)  # parsed as int64: it fits
    elif pd.api.types.is_unsigned_integer_dtype(numbers):
        too_big = numbers > np.iinfo(np.int64).max
    else:  # floats: int64 would wrap 2**63 and beyond round, e.g. to -9223372036854775808
        too_big = numbers.abs() >= 2.0 ** 63
    if too_big.any():
        row = _first(too_big)
        raise ValueError(f"{path}: column {col!r} holds a number too large for a 64-bit integer (limit "
                         f"{np.iinfo(np.int64).max}); line {_line(values, row, header)} has "
                         f"{_shown(values.iloc[row])}. Fix or remove that line")
    return numbers.astype(np.int64)


def _shown(value) -> str:
    """A cell value for an error message; an empty cell usually means a short (malformed) line.

    >>> _shown("yesterday"), _shown(float("nan")), _shown(" ")
    ("'yesterday'", 'an empty value (a short or malformed line?)', 'an empty value (a short or malformed line?)')
    """
    empty = pd.isna(value) or not str(value).strip()
    return "an empty value (a short or malformed line?)" if empty else repr(str(value))


def _numbers(values: pd.Series, path: Path, col: str, header: bool = True) -> pd.Series:
    """`values` as float64; raise naming the first line that is empty or not a number."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        row = _first(numbers.isna())
        raise ValueError(f"{path}: column {col!r} must hold numbers; line {_line(values, row, header)} has "
                         f"{_shown(values.iloc[row])}. Fix or remove that line")
    return numbers.astype(np.float64)


def _unix_seconds(year: int) -> int:
    """Unix seconds at the start of `year` (UTC).

    >>> _unix_seconds(1970), _unix_seconds(1990), _unix_seconds(2100)
    (0, 631152000, 4102444800)
    """
    return int(pd.Timestamp(year=year, month=1, day=1).timestamp())


def _plausible_times(values: pd.Series, path: Path, col: str, per_second: int = 1, header: bool = True) -> None:
    """Raise naming the first line whose unix time (in 1/`per_second` s) is outside `PLAUSIBLE_YEARS`."""
    lo, hi = (_unix_seconds(y) * per_second for y in PLAUSIBLE_YEARS)
    bad = (values < lo) | (values >= hi)
    if bad.any():
        row = _first(bad)
        unit = next(name for name, per in TIME_UNITS if per == per_second)
        raise ValueError(f"{path}: column {col!r} must hold unix {unit} from {PLAUSIBLE_YEARS[0]} to "
                         f"{PLAUSIBLE_YEARS[1]} ({lo} .. {hi - 1}); line {_line(values, row, header)} has "
                         f"{values.iloc[row]}: {_time_hint(int(values.iloc[row]), per_second)}")


def _time_hint(value: int, per_second: int = 1) -> str:
    """What to do with an implausible unix time `value` in 1/`per_second` s: the unit it looks like, if any.

    >>> _time_hint(1_649_379_600_123)
    'it looks like milliseconds (2022-04-08): divide by 1000'
    >>> _time_hint(1_649_379_600, per_second=1000)
    'it looks like seconds (2022-04-08): multiply by 1000'
    >>> _time_hint(-1)
    'no time unit puts it in 1990 .. 2100. Fix or remove that line'
    """
    lo, hi = (_unix_seconds(y) for y in PLAUSIBLE_YEARS)
    for unit, per in TIME_UNITS:
        if lo <= value / per < hi:
            date = pd.Timestamp(value // per, unit="s").date()
            fix = f"divide by {per // per_second}" if per > per_second else f"multiply by {per_second // per}"
            return f"it looks like {unit} ({date}): {fix}"
    return f"no time unit puts it in {PLAUSIBLE_YEARS[0]} .. {PLAUSIBLE_YEARS[1]}. Fix or remove that line"


def _drop_duplicates(df: pd.DataFrame, source: Path | str) -> pd.DataFrame:
    """Drop rows equal in every column, with a `DuplicateRowsWarning` naming `source` and the count."""
    dup = df.duplicated()
    if dup.any():
        warnings.warn(f"{runs.shown(source)}: dropped {int(dup.sum())} exact duplicate rows (same values in every column "
                      f"read); {int((~dup).sum())} rows kept", DuplicateRowsWarning, stacklevel=3)
    return df[~dup].reset_index(drop=True)


def calendar_days(timestamps: pd.Series, utc_offset_hours: int = 0) -> pd.Series:
    """Calendar day of each unix-seconds timestamp in a time zone, 0 = the day of the earliest one.

    >>> calendar_days(pd.Series([0, 86_399, 86_400, 3 * 86_400])).tolist()
    [0, 0, 1, 3]
    >>> calendar_days(pd.Series([0, 57_600]), utc_offset_hours=8).tolist()  # 16:00 UTC = Beijing midnight
    [0, 1]
    """
    local = (timestamps.astype(np.int64) + utc_offset_hours * 3600) // data.SECONDS_PER_DAY
    return (local - local.min()).astype(np.int64)


def _build(inter: pd.DataFrame, items: pd.DataFrame, utc_offset_hours: int, **meta) -> data.Dataset:
    """Re-index raw ids (data.reindex), set calendar days, and bundle a validated Dataset."""
    inter, items = data.reindex(inter, items)
    inter["day"] = calendar_days(inter["timestamp"], utc_offset_hours)
    return data.Dataset(interactions=inter, items=items, **meta)


# --- KuaiRand --------------------------------------------------------------------------------------

def _duration_text(ms: float) -> str:
    """Spoken length of a video for its stand-in title.

    >>> _duration_text(45_916), _duration_text(125_000), _duration_text(0)
    ('45 s long', '2 min 5 s long', 'length unknown')
    """
    if not ms or ms <= 0 or np.isnan(ms):
        return "length unknown"
    seconds = int(ms // 1000)
    return f"{seconds} s long" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s long"


def _duration_bucket(ms: float) -> str:
    """Stand-in category of a video: a bucket of its length.

    >>> [_duration_bucket(ms) for ms in (0, 5_000, 20_000, 45_000, 120_000, 900_000)]
    ['unknown length', 'under 10 s', '10-30 s', '30-60 s', '1-5 min', 'over 5 min']
    """
    if not ms or ms <= 0 or np.isnan(ms):
        return "unknown length"
    for limit, name in ((10_000, "under 10 s"), (30_000, "10-30 s"), (60_000, "30-60 s"), (300_000, "1-5 min")):
        if ms < limit:
            return name
    return "over 5 min"


def _kuairand_items(video_ids: np.ndarray, duration_ms: pd.Series, tags: Optional[pd.Series] = None
                    ) -> pd.DataFrame:
    """Stand-in item table: KuaiRand has no titles, so the text is built from the id, length and tags.

    title: "video 3892024, 45 s long" (+ ", tags 12, 65" when video_features_basic gives tags);
    category: the first tag ("tag 12") when tags are known, else a length bucket ("30-60 s").
    The length is the largest `duration_ms` logged for the video (0 means unknown in KuaiRand).
    """
    dur = duration_ms.reindex(video_ids).fillna(0).to_numpy()
    tag_text = (tags.reindex(video_ids).fillna("").astype(str).str.strip().to_numpy()
                if tags is not None else np.full(len(video_ids), ""))
    titles = [f"video {v}, {_duration_text(d)}" + (f", tags {t.replace(',', ', ')}" if t else "")
              for v, d, t in zip(video_ids, dur, tag_text)]
    categories = [f"tag {t.split(',')[0]}" if t else _duration_bucket(d) for d, t in zip(dur, tag_text)]
    return pd.DataFrame({"item_id": video_ids, "title": titles, "category": categories})


def _likehate_files(folder: Path) -> list[Path]:
    """Files in `folder` whose header names user_id, video_id, time_ms and label (tab or comma separated)."""
    found = []
    for path in sorted([*folder.glob("*.tsv"), *folder.glob("*.csv")]):
        with open(path, encoding="utf-8", errors="replace") as fh:
            header = fh.readline().strip()
        columns = set(header.split("\t" if "\t" in header else ","))
        if {"user_id", "video_id", "time_ms", "label"} <= columns:
            found.append(path)
    return found


def _load_kuairand_likehate(folder: Path) -> data.Dataset:
    """KuaiRand like/hate subset: `label` 0 (hate) -> negative, 1 (like) -> positive. Tab or comma separated.

    The bundled copy is tab-separated although other copies of it end in .csv; the separator is read from
    the header line. Needs user_id, video_id, time_ms, label; duration_ms (optional) feeds the stand-in text.
    """
    files = _likehate_files(folder)
    if len(files) > 1:
        raise ValueError(f"{folder}: several like/hate files {[f.name for f in files]}; keep one per folder")
    path = files[0]
    with open(path, encoding="utf-8") as fh:
        sep = "\t" if "\t" in fh.readline() else ","
    cols = ("user_id", "video_id", "time_ms", "label")
    df = _read(path, sep=sep, required=cols, integer=cols)
    bad = ~df["label"].isin([0, 1])
    if bad.any():
        raise ValueError(f"{path}: column 'label' must be 0 (hate) or 1 (like); found "
                         f"{sorted(df.loc[bad, 'label'].unique().tolist())} (first on line "
                         f"{_line(df['label'], _first(bad), True)}). Fix or remove those lines")
    _plausible_times(df["time_ms"], path, "time_ms", per_second=1000)
    if "duration_ms" in df.columns:
        df["duration_ms"] = _whole_numbers(df["duration_ms"], path, "duration_ms")
    df = _drop_duplicates(df, path).sort_values("time_ms", kind="stable")
    inter = pd.DataFrame({"user_id": df["user_id"], "item_id": df["video_id"], "timestamp": df["time_ms"] // 1000,
                          "feedback": np.where(df["label"] == 0, "negative", "positive"),
                          "raw_label": "label=" + df["label"].astype(str)})
    duration = (df["duration_ms"].groupby(df["video_id"]).max()
                if "duration_ms" in df.columns else pd.Series(dtype=float))
    items = _kuairand_items(np.sort(df["video_id"].unique()), duration)
    return _build(inter, items, BEIJING_UTC_OFFSET_H, name="kuairand-likehate", licence=KUAIRAND_LICENCE,
                  citation=KUAIRAND_CITATION, text_is_standin=True)


def _kuairand_feedback(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(feedback, raw_label) of official log rows; raw_label joins the signals set, e.g. "is_like+long_view"."""
    mask = np.zeros(len(df), dtype=np.int64)
    for bit, col in enumerate(KUAIRAND_SIGNALS):
        mask |= (df[col].to_numpy() > 0).astype(np.int64) << bit
    labels = {m: "+".join(c for b, c in enumerate(KUAIRAND_SIGNALS) if m >> b & 1) or "none" for m in np.unique(mask)}
    positive_bits = sum(1 << KUAIRAND_SIGNALS.index(c) for c in KUAIRAND_POSITIVE)
    feedback = np.where(mask & 1, "negative", np.where(mask & positive_bits, "positive", "exposure"))
    return feedback, pd.Series(mask).map(labels).to_numpy()


def _load_kuairand_log(folder: Path, logs: str = "all", progress: bool = True) -> data.Dataset:
    """Official KuaiRand logs (Pure, 1K or 27K `data/` folder): every log row is one exposure.

    `logs` picks the files: "standard" (log_standard_*), "random" (log_random_*, randomly exposed videos)
    or "all". `video_features_basic*.csv`, when present, gives tags (category = first tag).
    """
    patterns = {"all": ("log_standard_*.csv", "log_random_*.csv"), "standard": ("log_standard_*.csv",),
                "random": ("log_random_*.csv",)}
    if logs not in patterns:
        raise ValueError(f"logs={logs!r}; use one of {sorted(patterns)}")
    files = sorted(p for pattern in patterns[logs] for p in folder.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{folder}: no {' or '.join(patterns[logs])} file (logs={logs!r})")
    cols = ("user_id", "video_id", "time_ms", *KUAIRAND_SIGNALS)
    wanted = set(cols) | {"duration_ms"}
    frames = [_read_log(f, cols, wanted) for f in tqdm(files, desc="KuaiRand logs", disable=not progress)]
    df = _drop_duplicates(pd.concat(frames, ignore_index=True), folder).sort_values("time_ms", kind="stable")
    feedback, raw_label = _kuairand_feedback(df)
    inter = pd.DataFrame({"user_id": df["user_id"], "item_id": df["video_id"], "timestamp": df["time_ms"] // 1000,
                          "feedback": feedback, "raw_label": raw_label})
    duration = (pd.to_numeric(df["duration_ms"], errors="coerce").groupby(df["video_id"]).max()
                if "duration_ms" in df.columns else pd.Series(dtype=float))
    video_ids = np.sort(df["video_id"].unique())
    tags = _kuairand_tags(folder, video_ids)
    items = _kuairand_items(video_ids, duration, tags)
    return _build(inter, items, BEIJING_UTC_OFFSET_H, name=f"kuairand-log-{logs}", licence=KUAIRAND_LICENCE,
                  citation=KUAIRAND_CITATION, text_is_standin=True)


def _read_log(path: Path, cols: tuple[str, ...], wanted: set[str]) -> pd.DataFrame:
    """One official log file: its `wanted` columns, `cols` whole numbers, times in 1990..2100."""
    df = _read(path, required=cols, integer=cols, usecols=lambda c: c in wanted)
    _plausible_times(df["time_ms"], path, "time_ms", per_second=1000)
    return df


def _kuairand_tags(folder: Path, video_ids: np.ndarray) -> Optional[pd.Series]:
    """`tag` per video from video_features_basic*.csv ("12,65"), or None when the file is absent."""
    files = sorted(folder.glob("video_features_basic*.csv"))
    if not files:
        return None
    df = _read(files[0], required=("video_id", "tag"), integer=("video_id",),
               usecols=lambda c: c in ("video_id", "tag"), dtype={"tag": str})
    df = df[df["video_id"].isin(video_ids)].drop_duplicates("video_id")
    return df.set_index("video_id")["tag"]


# --- MovieLens -------------------------------------------------------------------------------------

def _movie_text(title: str, genres: list[str]) -> str:
    """Item text for MovieLens: the title, then the genres.

    >>> _movie_text("Toy Story (1995)", ["Adventure", "Animation"])
    'Toy Story (1995); genres: Adventure, Animation'
    >>> _movie_text("Blue (1993)", [])
    'Blue (1993); genres: none listed'
    """
    return f"{title}; genres: {', '.join(genres) if genres else 'none listed'}"


def _movielens_items(movie_ids: pd.Series, titles: pd.Series, genres: list[list[str]]) -> pd.DataFrame:
    """Item table: title + genres as text, category = the FIRST listed genre ("none" when none is listed)."""
    return pd.DataFrame({"item_id": movie_ids.to_numpy(),
                         "title": [_movie_text(t, g) for t, g in zip(titles, genres)],
                         "category": [g[0] if g else "none" for g in genres]})


def _movielens_dataset(ratings: pd.DataFrame, items: pd.DataFrame, path: Path, name: str) -> data.Dataset:
    """Ratings (user, movie, rating, timestamp, rating_text) -> Dataset: <= 2 negative, >= 4 positive."""
    unknown = ~ratings["movie"].isin(items["item_id"])
    if unknown.any():
        raise ValueError(f"{path}: {int(unknown.sum())} ratings name movies missing from the movies file, "
                         f"e.g. {ratings.loc[unknown, 'movie'].iloc[:5].tolist()}; the two files do not match")
    r = ratings["rating"].to_numpy()
    inter = pd.DataFrame({"user_id": ratings["user"], "item_id": ratings["movie"], "timestamp": ratings["timestamp"],
                          "feedback": np.select([r <= 2, r >= 4], ["negative", "positive"], "exposure"),
                          "raw_label": "rating=" + ratings["rating_text"].astype(str)})
    return _build(inter, items, 0, name=name, licence=MOVIELENS_LICENCE, citation=MOVIELENS_CITATION)


def _stars(values: pd.Series, path: Path, layout: str, header: bool = True) -> pd.Series:
    """Ratings as float64; raise naming the first line off the layout's star scale (`MOVIELENS_STARS`)."""
    stars = _numbers(values, path, "rating", header)
    scale, words = MOVIELENS_STARS[layout]
    bad = ~stars.isin(scale)
    if bad.any():
        row = _first(bad)
        raise ValueError(f"{path}: column 'rating' must hold {layout} ratings ({words}); line "
                         f"{_line(values, row, header)} has {_shown(values.iloc[row])}. A rating on another "
                         "scale (e.g. 1 .. 10) would be mapped wrongly (<= 2 negative, >= 4 positive): convert "
                         "the file to this scale, or give your own feedback column with loaders.load('csv', ...)")
    return stars


def _load_movielens_latest(folder: Path) -> data.Dataset:
    """ml-latest-small (and ml-latest): ratings.csv (userId, movieId, rating, timestamp), movies.csv."""
    path = folder / "ratings.csv"
    df = _read(path, required=("userId", "movieId", "rating", "timestamp"),
               integer=("userId", "movieId", "timestamp"))
    _plausible_times(df["timestamp"], path, "timestamp")
    df = _drop_duplicates(df.assign(stars=_stars(df["rating"], path, "movielens-latest")), path)
    ratings = pd.DataFrame({"user": df["userId"], "movie": df["movieId"], "timestamp": df["timestamp"],
                            "rating": df["stars"], "rating_text": df["rating"]})
    movies = _read(folder / "movies.csv", required=("movieId", "title", "genres"), integer=("movieId",))
    genres = [[] if g == "(no genres listed)" else g.split("|") for g in movies["genres"].fillna("").astype(str)]
    items = _movielens_items(movies["movieId"], movies["title"].astype(str), genres)
    return _movielens_dataset(ratings, items, path, "movielens-latest")


def _load_movielens_100k(folder: Path) -> data.Dataset:
    """ml-100k: u.data (user, item, rating, timestamp; tab), u.item (pipe-separated, latin-1, 19 genre flags)."""
    path = folder / "u.data"
    cols = ["user", "movie", "rating", "timestamp"]
    df = _read(path, sep="\t", names=cols, integer=("user", "movie", "timestamp"))
    _plausible_times(df["timestamp"], path, "timestamp", header=False)
    df["rating"] = _stars(df["rating"], path, "movielens-100k", header=False).astype(np.int64)  # whole stars
    df = _drop_duplicates(df, path)
    ratings = df.assign(rating_text=df["rating"].astype(str), rating=df["rating"].astype(float))
    names = ["movie", "title", "release", "video_release", "url", *ML100K_GENRES]
    movies = _read(folder / "u.item", sep="|", names=names, encoding="latin-1", integer=("movie", *ML100K_GENRES))
    flags = movies[list(ML100K_GENRES)].to_numpy()
    genres = [[g for g, f in zip(ML100K_GENRES, row) if f] for row in flags]
    items = _movielens_items(movies["movie"], movies["title"].fillna("unknown").astype(str), genres)
    return _movielens_dataset(ratings, items, path, "movielens-100k")


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """A '::'-separated latin-1 file without header (ml-1m); titles may contain ':' but not '::'."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; the folder's layout needs it")
    lines = pd.Series(path.read_text(encoding="latin-1").splitlines())
    lines = lines[lines.str.strip() != ""]  # the index keeps the 0-based line number
    if lines.empty:
        raise ValueError(f"{path}: the file is empty; download it again")
    parts = lines.str.split("::", n=len(names) - 1, expand=True).reindex(columns=range(len(names)))
    short = parts.isna().any(axis=1)
    if short.any():
        line = int(short.idxmax())
        raise ValueError(f"{path}: line {line + 1} does not have the {len(names)} '::'-separated fields "
                         f"{names}: {lines.loc[line]!r}; the file is malformed")
    parts.columns = names
    return parts  # the index keeps the 0-based line number: errors name the line an editor shows


def _load_movielens_1m(folder: Path) -> data.Dataset:
    """ml-1m: ratings.dat (UserID::MovieID::Rating::Timestamp), movies.dat (MovieID::Title::Genres), latin-1."""
    path = folder / "ratings.dat"
    df = _read_dat(path, ["user", "movie", "rating", "timestamp"])
    for col in ("user", "movie", "timestamp"):
        df[col] = _whole_numbers(df[col], path, col, header=False)
    _plausible_times(df["timestamp"], path, "timestamp", header=False)
    df = _drop_duplicates(df.assign(stars=_stars(df["rating"], path, "movielens-1m", header=False)), path)
    ratings = df.assign(rating_text=df["rating"], rating=df["stars"])
    mpath = folder / "movies.dat"
    movies = _read_dat(mpath, ["movie", "title", "genres"])
    movies["movie"] = _whole_numbers(movies["movie"], mpath, "movie", header=False)
    items = _movielens_items(movies["movie"], movies["title"], [g.split("|") if g else [] for g in movies["genres"]])
    return _movielens_dataset(ratings, items, path, "movielens-1m")


# --- generic CSV -----------------------------------------------------------------------------------

def _load_csv(folder: Path, dataset_name: str = "csv", licence: str = "unspecified: pass licence=... to loaders.load",
              citation: str = "unspecified: pass citation=... to loaders.load") -> data.Dataset:
    """Your own data: `interactions.csv` and, optionally, `items.csv`, comma-separated with a header row.

    interactions.csv (one row per exposure):
        user_id    any non-empty id, read as text exactly as written ('007' and '7' are two users)
        item_id    any non-empty id, read as text exactly as written
        timestamp  whole unix seconds (UTC) from 1990 to 2100; `day` is the UTC calendar day
        feedback   exactly one of: positive, negative, exposure
        raw_label  optional; defaults to the feedback value
    items.csv (optional): item_id, title (the text embedded for semantic IDs), category; every further
        column is kept as a categorical attribute (`Dataset.attributes`). Every interacted item must be listed.
        Without items.csv the title is the stand-in "item <id>", category "unknown", `text_is_standin=True`.
    Cells are read as written: only an empty cell is missing ('NA' or 'None' is a value, e.g. an id).
    """
    path = folder / "interactions.csv"
    df = _read(path, required=("user_id", "item_id", "timestamp", "feedback"), integer=("timestamp",),
               ids=("user_id", "item_id"))
    _plausible_times(df["timestamp"], path, "timestamp")
    bad = ~df["feedback"].isin(data.FEEDBACK)
    if bad.any():
        row = _first(bad)
        raise ValueError(f"{path}: column 'feedback' must be one of {data.FEEDBACK}; line "
                         f"{_line(df['feedback'], row, True)} has {_shown(df['feedback'].iloc[row])}. Fix or "
                         "remove that line")
    df = _drop_duplicates(df, path)
    inter = df.assign(raw_label=df["raw_label"].astype(str) if "raw_label" in df.columns else df["feedback"])
    items, attributes = _csv_items(folder, inter["item_id"])
    return _build(inter, items, 0, name=dataset_name, licence=licence, citation=citation, attributes=attributes,
                  text_is_standin=not (folder / "items.csv").is_file())


def _csv_items(folder: Path, item_ids: pd.Series) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The items table of the generic CSV layout (see `_load_csv`) and its attribute columns."""
    path = folder / "items.csv"
    if not path.is_file():
        ids = item_ids.drop_duplicates()
        return pd.DataFrame({"item_id": ids, "title": "item " + ids.astype(str), "category": "unknown"}), ()
    items = _read(path, required=("item_id", "title", "category"), ids=("item_id",))
    if items["item_id"].duplicated().any():
        raise ValueError(f"{path}: item_id {items.loc[items['item_id'].duplicated(), 'item_id'].iloc[0]!r} is "
                         "listed more than once; keep one row per item")
    missing = sorted(set(item_ids) - set(items["item_id"]))
    if missing:
        raise ValueError(f"{path}: {len(missing)} interacted items are not listed, e.g. {missing[:5]}; "
                         "add a row for each (or remove items.csv to use stand-in titles)")
    attributes = tuple(c for c in items.columns if c not in ("item_id", "title", "category"))
    for col in ("title", "category", *attributes):
        items[col] = items[col].fillna("").astype(str)
    return items, attributes


READERS: dict[str, Callable[..., data.Dataset]] = {
    "kuairand-log": _load_kuairand_log,
    "kuairand-likehate": _load_kuairand_likehate,
    "movielens-latest": _load_movielens_latest,
    "movielens-100k": _load_movielens_100k,
    "movielens-1m": _load_movielens_1m,
    "csv": _load_csv,
}
