"""The one data model every notebook shares: interactions, items, and a `Dataset` that bundles them.

Interactions (one row per exposure of an item to a user):
    user_id    int64, contiguous 0..n_users-1
    item_id    int64, contiguous 0..n_items-1 (row index of `items`)
    timestamp  int64, seconds (unix seconds for real data, simulated seconds for the simulator)
    day        int64, calendar day index (0 = the calendar day of the first timestamp; UTC, Beijing for KuaiRand)
    feedback   str, one of FEEDBACK: "positive", "negative" (explicit "not interested"), "exposure"
    raw_label  str, the source's own label, kept for inspection (e.g. "is_hate", "rating=1.5")
Items:
    item_id    int64, 0..n_items-1, sorted
    raw_id     str, the source's own id
    title      str, the text embedded for semantic IDs (a documented stand-in where the source has none)
    category   str
    ...        optional categorical attribute columns (listed in `Dataset.attributes`)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from conrec_lib import artifacts, runs

FEEDBACK = ("positive", "negative", "exposure")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "day", "feedback", "raw_label")
ITEM_COLUMNS = ("item_id", "raw_id", "title", "category")
SECONDS_PER_DAY = 86_400


@dataclasses.dataclass
class Dataset:
    """Interactions + items + provenance. `ground_truth` is set only for the simulator.

    `ground_truth` is a DataFrame of the users' true negative interests ("aversion facets"):
    columns `user_id`, `rank` (0 = strongest), `facet` (e.g. "material=leather", as produced by
    `item_facets`), `strength` (> 0), and in a world whose aversions apply only inside some categories
    (`simulate.AVERSION_SCOPES`) `scope`: those categories, "|"-joined.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    licence: str
    citation: str
    attributes: tuple[str, ...] = ()
    text_is_standin: bool = False
    ground_truth: Optional[pd.DataFrame] = None

    def __post_init__(self) -> None:
        validate(self)

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].max()) + 1 if len(self.interactions) else 0

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_days(self) -> int:
        return int(self.interactions["day"].max()) + 1 if len(self.interactions) else 0

    def counts(self) -> dict[str, int]:
        """Rows per feedback type, always with all three keys."""
        vc = self.interactions["feedback"].value_counts()
        return {f: int(vc.get(f, 0)) for f in FEEDBACK}


def validate(ds: Dataset) -> None:
    """Check the data model; raise ValueError naming the table, column and what to fix."""
    inter, items = ds.interactions, ds.items
    for table, df, cols in (("interactions", inter, INTERACTION_COLUMNS), ("items", items, ITEM_COLUMNS)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{ds.name}: {table} table lacks column(s) {missing}; it has {list(df.columns)}")
    if len(inter) == 0:
        raise ValueError(f"{ds.name}: the interactions table is empty; check the source file")
    bad = set(inter["feedback"].unique()) - set(FEEDBACK)
    if bad:
        raise ValueError(f"{ds.name}: feedback column has values {sorted(bad)}; allowed: {FEEDBACK}")
    for col in ("user_id", "item_id", "timestamp", "day"):
        if not pd.api.types.is_integer_dtype(inter[col]):
            raise ValueError(f"{ds.name}: interactions.{col} must be integer, found {inter[col].dtype}")
    _check_ids(ds)
    missing_attrs = [a for a in ds.attributes if a not in items.columns]
    if missing_attrs:
        raise ValueError(f"{ds.name}: attributes {missing_attrs} are not columns of the items table")


def _check_ids(ds: Dataset) -> None:
    """User and item ids are contiguous 0..n-1 (items: the rows of the items table); raise naming the value."""
    fix = "re-index the raw ids with data.reindex()"
    item_ids = ds.items["item_id"].to_numpy()
    wrong = np.flatnonzero(item_ids != np.arange(len(item_ids)))
    if len(wrong):
        raise ValueError(f"{ds.name}: items.item_id must be 0..n_items-1 in row order; row {wrong[0]} has "
                         f"{item_ids[wrong[0]]}; {fix}")
    used = ds.interactions["item_id"].to_numpy()
    outside = used[(used < 0) | (used >= len(item_ids))]
    if len(outside):
        raise ValueError(f"{ds.name}: interactions.item_id has {outside[0]}, outside 0..{len(item_ids) - 1} (the "
                         f"rows of the items table); {fix}")
    users = np.unique(ds.interactions["user_id"].to_numpy())
    if users[0] < 0:
        raise ValueError(f"{ds.name}: interactions.user_id must be 0..n_users-1; it has the negative id "
                         f"{users[0]}; {fix}")
    if users[-1] != len(users) - 1:
        gap = int(np.flatnonzero(users != np.arange(len(users)))[0])  # the first id no row uses
        raise ValueError(f"{ds.name}: interactions.user_id must be 0..n_users-1 without gaps; {len(users)} users "
                         f"have ids up to {users[-1]} but no row has user {gap}; {fix}")


def item_facets(ds: Dataset) -> list[frozenset[str]]:
    """Per item, its facets as strings "column=value" over `category` and the attribute columns.

    Facets are the unit of "negative interest": the simulator's ground truth uses the same
    strings, and on real data the most-disliked categories serve as a stated proxy.
    """
    cols = ["category", *ds.attributes]
    values = ds.items[cols].astype(str).to_numpy()
    return [frozenset(f"{c}={v}" for c, v in zip(cols, row)) for row in values]


def reindex(interactions: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map raw user/item ids to contiguous ints and derive `day`; keep raw item ids in `items.raw_id`.

    `interactions` must have raw `user_id`, `item_id`, `timestamp` (seconds); `items` a raw `item_id`.
    Items without interactions are dropped; users are numbered in order of first appearance in time.
    """
    inter = interactions.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)
    items = items[items["item_id"].isin(inter["item_id"])].copy()
    items["raw_id"] = items["item_id"].astype(str)
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    item_map = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
    user_codes, _ = pd.factorize(inter["user_id"])
    inter["user_id"] = user_codes.astype(np.int64)
    inter["item_id"] = item_map.loc[inter["item_id"].to_numpy()].to_numpy().astype(np.int64)
    inter["timestamp"] = inter["timestamp"].astype(np.int64)
    inter["day"] = ((inter["timestamp"] - inter["timestamp"].min()) // SECONDS_PER_DAY).astype(np.int64)
    items["item_id"] = np.arange(len(items), dtype=np.int64)
    return inter[list(INTERACTION_COLUMNS)], items


# --- save / load: the run folder keeps the exact dataset later notebooks used -------------------

def save(ds: Dataset, folder: str | Path) -> Path:
    """Write the dataset as parquet + `dataset.json` into `folder`, each file atomically."""
    folder = Path(folder)
    with runs.atomic_path(folder / "interactions.parquet") as tmp:
        ds.interactions.to_parquet(tmp, index=False)
    with runs.atomic_path(folder / "items.parquet") as tmp:
        ds.items.to_parquet(tmp, index=False)
    if ds.ground_truth is not None:
        with runs.atomic_path(folder / "ground_truth.parquet") as tmp:
            ds.ground_truth.to_parquet(tmp, index=False)
    meta = {"name": ds.name, "licence": ds.licence, "citation": ds.citation,
            "attributes": list(ds.attributes), "text_is_standin": ds.text_is_standin,
            "has_ground_truth": ds.ground_truth is not None}
    runs.write_json(folder / "dataset.json", meta)  # written last: marks the folder complete
    return folder


def load(folder: str | Path) -> Dataset:
    """Read a dataset written by `save`."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no dataset.json; this folder was not written by data.save()")
    meta = runs.read_json(meta_path)
    gt = artifacts.read(pd.read_parquet, folder / "ground_truth.parquet") if meta["has_ground_truth"] else None
    return Dataset(name=meta["name"], interactions=artifacts.read(pd.read_parquet, folder / "interactions.parquet"),
                   items=artifacts.read(pd.read_parquet, folder / "items.parquet"), licence=meta["licence"],
                   citation=meta["citation"], attributes=tuple(meta["attributes"]),
                   text_is_standin=meta["text_is_standin"], ground_truth=gt)
