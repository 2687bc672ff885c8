"""Statistics that notebook 01 shows: volume, sparsity, sequence lengths, long tails, categories."""
from __future__ import annotations

import numpy as np
import pandas as pd

from conrec_lib.data import dataset as data


def summary(ds: data.Dataset, split) -> dict:
    """The numbers `01_data/metrics.json` records (sizes, feedback counts, long-tail shares, split sizes)."""
    counts = ds.counts()
    users_with_neg = ds.interactions.loc[ds.interactions["feedback"] == "negative", "user_id"].nunique()
    neg_per_item = negatives_per_item(ds)
    return {
        "dataset": ds.name,
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "n_days": ds.n_days,
        "n_positive": counts["positive"],
        "n_negative": counts["negative"],
        "n_exposure": counts["exposure"],
        "positive_to_negative": round(counts["positive"] / max(counts["negative"], 1), 3),
        "users_without_negatives": int(ds.n_users - users_with_neg),
        "density": round(len(ds.interactions) / max(ds.n_users * ds.n_items, 1), 6),
        "longtail_user_share": round(float(split.test["longtail_user"].mean()), 4) if len(split.test) else 0.0,
        "longtail_item_share": round(float((neg_per_item[neg_per_item > 0] < 5).mean()), 4),
        "n_train_examples": len(split.train),
        "n_test_examples": len(split.test),
    }


def negatives_per_item(ds: data.Dataset) -> np.ndarray:
    """Number of negative interactions per item (length n_items)."""
    neg = ds.interactions.loc[ds.interactions["feedback"] == "negative", "item_id"]
    return np.bincount(neg.to_numpy(), minlength=ds.n_items)


def per_day(ds: data.Dataset) -> pd.DataFrame:
    """Interactions per day (rows) and feedback type (columns)."""
    table = ds.interactions.groupby(["day", "feedback"]).size().unstack(fill_value=0)
    return table.reindex(columns=[f for f in data.FEEDBACK if f in table.columns])


def sequence_lengths(ds: data.Dataset, kinds=("positive", "negative")) -> dict[str, np.ndarray]:
    """Per user, how many interactions of each kind (users with none count as 0)."""
    inter = ds.interactions
    return {k: np.bincount(inter.loc[inter["feedback"] == k, "user_id"], minlength=ds.n_users) for k in kinds}


def length_table(lengths: dict[str, np.ndarray]) -> pd.DataFrame:
    """Median / mean / share-of-zero per feedback kind, rounded for display."""
    rows = {k: {"median": float(np.median(v)), "mean": round(float(np.mean(v)), 2),
                "users with none": round(float((v == 0).mean()), 3)} for k, v in lengths.items()}
    return pd.DataFrame(rows).T


def category_feedback(ds: data.Dataset, top: int = 12) -> pd.DataFrame:
    """Share of each feedback type per category (rows sum to 1), for the `top` categories by volume."""
    inter = ds.interactions.merge(ds.items[["item_id", "category"]], on="item_id")
    table = inter.groupby(["category", "feedback"]).size().unstack(fill_value=0)
    table = table.loc[table.sum(axis=1).sort_values(ascending=False).index[:top]]
    return table.div(table.sum(axis=1), axis=0).round(3)


def user_timeline(ds: data.Dataset, user_id: int) -> pd.DataFrame:
    """One user's positive and negative events in time order, with item titles."""
    inter = ds.interactions
    ev = inter[(inter["user_id"] == user_id) & (inter["feedback"] != "exposure")]
    return ev.merge(ds.items[["item_id", "title", "category"]], on="item_id").sort_values("timestamp")


def example_user(ds: data.Dataset, min_negatives: int = 5) -> int:
    """A deterministic user to show: the lowest id with at least `min_negatives` negatives."""
    counts = sequence_lengths(ds, ("negative",))["negative"]
    eligible = np.flatnonzero(counts >= min_negatives)
    return int(eligible[0] if len(eligible) else counts.argmax())


def top1_coverage(ds: data.Dataset, split) -> pd.DataFrame:
    """Simulator only: share of test users whose top-1 / top-4 aversion facets are covered by the
    next negative item vs by all negatives of the next H days (see `metrics.interest_coverage`)."""
    from conrec_lib import metrics
    from conrec_lib.data import simulate

    facets = data.item_facets(ds)
    test = split.test
    rows = {}
    for k in (1, 4):
        top = simulate.top_interests(ds, k)
        interests = [top.get(int(u), []) for u in test["user_id"]]
        rows[f"top-{k} interests"] = {
            "next negative": metrics.interest_coverage(interests, [[i] for i in test["next_negative"]], facets),
            f"negatives of next {split.config.horizon_days} days": metrics.interest_coverage(
                interests, list(test["future_negatives"]), facets),
        }
    return pd.DataFrame(rows).T
