"""Notebook 02's stage: item embeddings -> residual quantizer -> one unique semantic ID per item.

`tokenize(cfg, run)` writes `RUN_DIR/02_semantic_ids/` (SID table, codebooks, quantizer, metrics);
later notebooks call `load_sids(run)` to get the exact SIDs and codebooks notebook 02 made.
Collaborative embeddings learn only from `training_interactions(split)`, so nothing of the test window
shapes the SIDs.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from conrec_lib import artifacts, runs
from conrec_lib import findings as findings_
from conrec_lib.data import dataset as data, dataprep, splits
from conrec_lib.sids import embeddings, semantic_ids
from conrec_lib import configs
from conrec_lib.configs import check_types
from conrec_lib.sids.embeddings import EmbedConfig
from conrec_lib.sids.quantizer import SIDConfig

STAGE = "02_semantic_ids"
OTHER = {"rqvae": "rqkmeans", "rqkmeans": "rqvae"}
ITEM_TEXTS = ("auto", "title", "columns")


@dataclasses.dataclass
class TokenizerConfig:
    """Embedding + quantizer settings of notebook 02, and whether to build the other quantizer too."""

    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)
    sid: SIDConfig = dataclasses.field(default_factory=SIDConfig)
    compare: bool = True  # also build the other quantizer (rqvae <-> rqkmeans) for a side-by-side table

    def __post_init__(self) -> None:
        check_types(self)

    @classmethod
    def for_dataset(cls, ds: data.Dataset, embedder: str = "auto", compare: bool = True, item_text: str = "auto",
                    **sid_fields) -> "TokenizerConfig":
        """`embedder="auto"`: MiniLM on real item text, collaborative embeddings where text is a stand-in;
        `item_text`: "title" (one sentence per item), "columns" (category and each attribute column embedded on its
        own, `EmbedConfig.per_column`) or "auto" (columns where the dataset has attribute columns and real text,
        else the title); `compare`: also build the other quantizer."""
        if embedder == "auto":
            embedder = "collaborative" if ds.text_is_standin else "minilm"
        if item_text not in ITEM_TEXTS:
            raise ValueError(f"item_text={item_text!r}: use one of {ITEM_TEXTS}")
        if item_text == "auto":
            item_text = "columns" if ds.attributes and embedder not in ("tfidf", "collaborative") else "title"
        embed = (EmbedConfig(encoder=embedder, text_columns=("category", *ds.attributes), per_column=True)
                 if item_text == "columns" else EmbedConfig(encoder=embedder))
        return cls(embed=embed, sid=SIDConfig(**sid_fields), compare=compare)


@dataclasses.dataclass
class Tokenized:
    """What notebook 02 hands on: the SIDs (table + quantizer), the item embeddings, and the metrics."""

    sids: semantic_ids.SIDResult
    item_embeddings: np.ndarray  # (n_items, d) unit rows, the encoder's output
    metrics: dict
    alternative: Optional[semantic_ids.SIDResult] = None  # the other quantizer, when compare=True


def training_interactions(split: splits.Split) -> pd.DataFrame:
    """The rows of the log a model may learn from (`Split.training_rows`): what collaborative embeddings see."""
    return split.training_rows()


def _timed_build(x: np.ndarray, cfg: SIDConfig, categories, progress: bool):
    start = time.perf_counter()
    result = semantic_ids.build(x, cfg, progress=progress, categories=categories)
    return result, time.perf_counter() - start


def _summary(result: semantic_ids.SIDResult, seconds: float) -> dict:
    keep = ("collision_rate_before_dedup", "collision_rate", "max_collision_group", "codebook_utilization",
            "perplexity", "reconstruction_mse", "reconstruction_cosine", "prefix_category_purity",
            "prefix_category_purity_shuffled")
    return {**{k: result.report[k] for k in keep if k in result.report}, "build_seconds": round(seconds, 2)}


def tokenize(cfg: TokenizerConfig, run: runs.Run, progress: bool = True) -> Tokenized:
    """Embed the items of notebook 01's dataset, build SIDs, save everything, write metrics last."""
    prepared = dataprep.load_prepared(run)
    ds = prepared.dataset
    with run.building(STAGE, cfg) as stage:
        x = embeddings.embed_items(ds, cfg.embed, cache_dir=run.root / "cache" / "embeddings", progress=progress,
                                   interactions=training_interactions(prepared.split))
        categories = ds.items["category"].astype(str).tolist()
        result, seconds = _timed_build(x, cfg.sid, categories, progress)
        semantic_ids.save(result, stage / "sids")
        np.save(stage / "item_embeddings.npy", x)
        metrics = {"quantizer": cfg.sid.quantizer, "encoder": cfg.embed.encoder, "per_column": cfg.embed.per_column,
                   "embedding_dim": int(x.shape[1]), **_summary(result, seconds),
                   "level_purity": level_purity(result.table.quantized_codes, ds.items, ("category", *ds.attributes))}
        alternative = None
        if cfg.compare:
            other = dataclasses.replace(cfg.sid, quantizer=OTHER[cfg.sid.quantizer])
            alternative, alt_seconds = _timed_build(x, other, categories, progress)
            metrics["comparison"] = {other.quantizer: _summary(alternative, alt_seconds)}
        run.finish(STAGE, metrics)
    return Tokenized(result, x, metrics, alternative)


def load_config(run: runs.Run) -> TokenizerConfig:
    """The TokenizerConfig notebook 02 ran with (what later stages read instead of its config.json keys)."""
    return configs.read(TokenizerConfig, run.require(STAGE) / "config.json")


def load_sids(run: runs.Run) -> Tokenized:
    """The SIDs and item embeddings notebook 02 wrote (an error names the notebook if it has not run)."""
    stage = run.require(STAGE)
    return Tokenized(semantic_ids.load(stage / "sids"), artifacts.read(np.load, stage / "item_embeddings.npy"),
                     run.metrics(STAGE))


def level_purity(codes: np.ndarray, items, columns: Sequence[str]) -> dict[str, list[float]]:
    """Per item column, per SID level: items grouped by their code at that level, the size-weighted mean share of
    each group's most common value (1.0: the level's codes name the column's value; 1/n_values or so: unrelated).

    >>> import pandas as pd
    >>> level_purity(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), pd.DataFrame({"colour": list("rrbb")}), ["colour"])
    {'colour': [1.0, 0.5]}
    """
    out = {}
    for column in columns:
        values = items[column].astype(str).to_numpy()
        out[column] = [round(float(sum(np.unique(values[level == k], return_counts=True)[1].max()
                                       for k in np.unique(level)) / len(values)), 4) for level in codes.T]
    return out


def purity_table(metrics: dict) -> pd.DataFrame:
    """Notebook 02's `level_purity` as a table: one row per item column, one column per SID level."""
    purity = metrics["level_purity"]
    levels = [f"level {semantic_ids.level_letter(d)}" for d in range(len(next(iter(purity.values()))))]
    return pd.DataFrame(purity, index=levels).T.round(2)


def items_by_prefix(table: semantic_ids.SIDTable, items, first_codes: list[int], per_code: int = 4):
    """A few item titles for each of the given first-level codes: the SID hierarchy read as a category tree."""
    frame = table.to_frame().merge(items[["item_id", "title", "category"]], on="item_id")
    frame = frame[frame["code_a"].isin(first_codes)].sort_values(["code_a", "code_b", "code_c", "item_id"])
    return frame.groupby("code_a").head(per_code)[["sid", "category", "title"]].reset_index(drop=True)


def random_code_neighbours(sids: semantic_ids.SIDResult, item_embeddings: np.ndarray, items, seed: int = 0,
                           k: int = 3):
    """Reconstruct a random code tuple (possibly no item's) and list the nearest real items."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, sids.table.codebook_size, size=(1, sids.table.levels))
    vector = sids.quantizer.reconstruct(codes)[0]
    sims = item_embeddings @ (vector / max(np.linalg.norm(vector), 1e-12))
    top = np.argsort(-sims)[:k]
    out = items.loc[top, ["item_id", "title", "category"]].assign(cosine=sims[top].round(3))
    return semantic_ids.render(codes[0].tolist()), out.reset_index(drop=True)


def comparison_table(metrics: dict, timings: bool = False) -> "pd.DataFrame":
    """One row per quantizer built in notebook 02 (from its metrics.json), rounded for display."""
    import pandas as pd

    rows = {metrics["quantizer"]: metrics, **metrics.get("comparison", {})}
    table = pd.DataFrame({
        name: {"collisions before de-dup": m["collision_rate_before_dedup"],
               "collisions after": m["collision_rate"],
               **{f"codes used, level {chr(97 + d)}": u for d, u in enumerate(m["codebook_utilization"])},
               "reconstruction MSE": m["reconstruction_mse"],
               "reconstruction cosine": m["reconstruction_cosine"],
               "first-code category purity": m.get("prefix_category_purity", float("nan")),
               **({"build seconds": m["build_seconds"]} if timings else {})}
        for name, m in rows.items()}).T
    return table.round(4)


def findings(tok: Tokenized) -> findings_.Findings:
    """Notebook 02's conclusions from its metrics, each with a margin that survives another machine."""
    metrics = tok.metrics
    pairs = [("Does every item have its own SID after the de-duplication token?", metrics["collision_rate"] == 0.0),
             ("Does every level use at least 90% of its codes?", min(metrics["codebook_utilization"]) >= 0.9),
             ("Is code usage spread (perplexity above a quarter of the codebook size at every level)?",
              min(metrics["perplexity"]) > tok.sids.table.codebook_size / 4),
             ("Do fewer than 20% of the items share their first codes with another item?",
              metrics["collision_rate_before_dedup"] < 0.2),
             ("Is the reconstruction cosine above 0.8?", metrics["reconstruction_cosine"] > 0.8)]
    if "prefix_category_purity" in metrics:
        pairs.append(("Does the first code carry the category (purity above 0.6, shuffled codes' below 0.3)?",
                      metrics["prefix_category_purity"] > 0.6 and metrics["prefix_category_purity_shuffled"] < 0.3))
    attributes = {c: p for c, p in metrics.get("level_purity", {}).items() if c != "category"}
    if attributes:
        pairs.append(("Does a level after the first name an attribute (purity above 0.8 in some attribute column)?",
                      max(max(p[1:], default=0.0) for p in attributes.values()) > 0.8))
    for name, other in metrics.get("comparison", {}).items():
        pairs.append((f"Does {name} reconstruct better than {metrics['quantizer']} (cosine higher by 0.02+)?",
                      findings_.above(other["reconstruction_cosine"], metrics["reconstruction_cosine"], 0.02)))
    return findings_.Findings.of(*pairs)
