"""Semantic IDs: every item as a short code of tokens such as `<a_5><b_2><c_9><d_0>`.

Paper section "Context compression". `build` trains a residual quantizer (`conrec_lib.sids.quantizer`)
on the item embeddings, encodes each item to `levels` codes, and makes the codes unique with one
extra de-duplication token. The SID table maps item_id <-> codes <-> string; the quantizer turns any
valid SID back into an embedding (`SIDResult.embed`), which the reward and the deployment filter use.

Collision handling (the paper does not describe it): items whose `levels` codes coincide get an
extra token `<d_k>`, k = 0, 1, 2, ... within the collision group in item-id order, and items without
a collision get `<d_0>`. The extra token is *always* appended, as in TIGER, so every SID has the same
length and the same token grammar: constrained decoding and parsing never need to know whether an
item collided, and an item's first `levels` tokens still carry all its semantics. The alternative,
re-assigning colliding items to a nearby free code, keeps 3 tokens but gives those items a code
that describes them less well.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from conrec_lib.sids import quantizer as quant
from conrec_lib import artifacts, runs
from conrec_lib.sids.quantizer import Quantizer, SIDConfig

__all__ = ["SIDConfig", "SIDTable", "SIDResult", "build", "render", "parse", "deduplicate",
           "quality_report", "save", "load", "token_vectors"]

_TOKEN = re.compile(r"<([a-z])_(0|[1-9][0-9]*)>")
_PIECES = re.compile(r"<[^<>]*>|[^<>]+|[<>]")


def level_letter(level: int) -> str:
    """The token letter of a level: 0 -> "a", 1 -> "b", ...

    >>> level_letter(3)
    'd'
    """
    return chr(ord("a") + level)


def render(codes: Sequence[int]) -> str:
    """The SID string of one code tuple.

    >>> render((5, 2, 9, 0))
    '<a_5><b_2><c_9><d_0>'
    """
    return "".join(f"<{level_letter(level)}_{int(code)}>" for level, code in enumerate(codes))


def parse(sid: str) -> tuple[int, ...]:
    """The code tuple of a SID string; the inverse of `render`.

    >>> parse("<a_5><b_2><c_9><d_0>")
    (5, 2, 9, 0)
    """
    if not isinstance(sid, str) or not sid:
        raise ValueError(f"not a SID: {sid!r}; expected tokens like '<a_5><b_2><c_9><d_0>'")
    codes = []
    for piece in _PIECES.findall(sid):
        match = _TOKEN.fullmatch(piece)
        if match is None:
            raise ValueError(f"bad SID token {piece!r} in {sid!r}; tokens look like '<a_5>' (letter_number)")
        if match.group(1) != level_letter(len(codes)):
            raise ValueError(f"bad SID token {piece!r} in {sid!r}: position {len(codes)} needs letter "
                             f"{level_letter(len(codes))!r}")
        codes.append(int(match.group(2)))
    return tuple(codes)


def deduplicate(codes: np.ndarray) -> np.ndarray:
    """Append the de-duplication column: k-th item (in row order) of each group of equal codes gets k.

    >>> deduplicate(np.array([[1, 2], [0, 0], [1, 2]])).tolist()
    [[1, 2, 0], [0, 0, 0], [1, 2, 1]]
    """
    codes = np.asarray(codes, dtype=np.int64)
    frame = pd.DataFrame(codes)
    dup = frame.groupby(list(frame.columns), sort=False).cumcount().to_numpy(np.int64)
    return np.column_stack([codes, dup])


def shared_share(codes: np.ndarray) -> float:
    """Share of rows whose code tuple also belongs to another row.

    >>> shared_share(np.array([[1, 2], [0, 0], [1, 2], [3, 3]]))
    0.5
    """
    return float(pd.DataFrame(np.asarray(codes)).duplicated(keep=False).mean())


@dataclasses.dataclass(eq=False)  # compare tables by their `codes` arrays
class SIDTable:
    """item_id <-> SID: row i of `codes` is item i, `levels` quantizer codes then the de-dup index."""

    codes: np.ndarray  # (n_items, levels + 1) int64
    codebook_size: int
    levels: int

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.codes.ndim != 2 or self.codes.shape[1] != self.levels + 1:
            raise ValueError(f"SIDTable.codes must have shape (n_items, levels + 1 = {self.levels + 1}); "
                             f"got {self.codes.shape}")
        quant.check_codes(self.codes[:, :self.levels], self.levels, self.codebook_size)
        if shared_share(self.codes) > 0:
            raise ValueError("SIDTable.codes has duplicate rows; build the table with deduplicate(codes)")

    @property
    def n_tokens(self) -> int:
        return self.levels + 1

    @property
    def quantized_codes(self) -> np.ndarray:
        """(n_items, levels): the codes without the de-dup column, what `reconstruct` takes."""
        return self.codes[:, :self.levels]

    @functools.cached_property
    def strings(self) -> list[str]:
        """The SID string of every item, index = item_id."""
        return [render(row) for row in self.codes.tolist()]

    @functools.cached_property
    def _index(self) -> dict[tuple[int, ...], int]:
        return {tuple(row): item for item, row in enumerate(self.codes.tolist())}

    def item_of(self, sid: str | Sequence[int]) -> int:
        """The item_id of a full SID (string or code tuple, de-dup token included)."""
        codes = parse(sid) if isinstance(sid, str) else tuple(int(c) for c in sid)
        if len(codes) != self.n_tokens:
            raise ValueError(f"SID {sid!r} has {len(codes)} tokens; a full SID has {self.n_tokens} "
                             f"(the last one is the de-duplication token <{level_letter(self.levels)}_k>)")
        if codes not in self._index:
            raise KeyError(f"no item has SID {render(codes)}")
        return self._index[codes]

    def sid_of(self, item_id: int) -> str:
        if not 0 <= item_id < len(self.codes):
            raise KeyError(f"item_id {item_id} is outside 0..{len(self.codes) - 1}")
        return self.strings[item_id]

    def vocabulary(self) -> list[str]:
        """Every token a SID of this table can contain, level by level."""
        tokens = [f"<{level_letter(d)}_{k}>" for d in range(self.levels) for k in range(self.codebook_size)]
        n_dedup = int(self.codes[:, -1].max()) + 1 if len(self.codes) else 1
        return tokens + [f"<{level_letter(self.levels)}_{k}>" for k in range(n_dedup)]

    def to_frame(self) -> pd.DataFrame:
        """One row per item: item_id, code_a, code_b, ..., sid."""
        frame = pd.DataFrame(self.codes, columns=[f"code_{level_letter(d)}" for d in range(self.n_tokens)])
        frame.insert(0, "item_id", np.arange(len(self.codes), dtype=np.int64))
        frame["sid"] = self.strings
        return frame


@dataclasses.dataclass(eq=False)
class SIDResult:
    """What `build` returns: the table, the trained quantizer, its training history, the quality report."""

    table: SIDTable
    quantizer: Quantizer
    history: pd.DataFrame
    report: dict
    config: SIDConfig

    def embed(self, sids: Sequence[str]) -> np.ndarray:
        """(n, d) embeddings of SID strings, existing or not: decoded sums of codewords.

        A de-duplication token, when present, is ignored: it carries no meaning.
        """
        codes = [parse(s) for s in sids]
        short = [s for s, c in zip(sids, codes) if len(c) < self.table.levels]
        if short:
            raise ValueError(f"SID {short[0]!r} has fewer than {self.table.levels} tokens")
        return self.quantizer.reconstruct(np.array([c[:self.table.levels] for c in codes], dtype=np.int64))


def token_vectors(result: "SIDResult") -> dict[str, np.ndarray]:
    """Each code token of the quantized levels -> its codeword ("<b_7>" -> codebook 1, row 7), what an LLM's SID
    token embeddings can start from (`model.load_model(token_vectors=...)`); de-duplication tokens have none."""
    codewords = result.quantizer.codewords()  # (levels, K, latent)
    return {f"<{level_letter(d)}_{c}>": codewords[d, c] for d in range(result.table.levels)
            for c in range(codewords.shape[1])}


def build(embeddings: np.ndarray, cfg: SIDConfig, progress: bool = False,
          categories: Optional[Sequence[str]] = None) -> SIDResult:
    """Train the quantizer on (n_items, d) embeddings and give every item a unique SID.

    `categories` (one per item), when given, adds `prefix_category_purity` to the report.
    """
    x = quant.check_embeddings(embeddings, cfg)
    fit = quant.fit(x, cfg, progress=progress)
    table = SIDTable(deduplicate(fit.quantizer.encode(x)), cfg.codebook_size, cfg.levels)
    report = quality_report(table, fit.quantizer, x, categories)
    return SIDResult(table, fit.quantizer, fit.history, report, cfg)


# --- quality report ----------------------------------------------------------------------------

def quality_report(table: SIDTable, quantizer: Quantizer, embeddings: np.ndarray,
                   categories: Optional[Sequence[str]] = None) -> dict:
    """Collisions, code usage, reconstruction error and (with categories) how prefixes match categories.

    collision_rate_before_dedup: share of items whose `levels` codes are shared with another item.
    collision_rate: the same over full SIDs (0.0 after de-duplication).
    codebook_utilization, perplexity: per level, share of codes used and exp(entropy) of their usage.
    reconstruction_mse: mean over items and dimensions of (x - reconstruct(codes))^2;
    reconstruction_cosine: mean cosine between x and its reconstruction.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    x_hat = quantizer.reconstruct(table.quantized_codes)
    usage = [quant.usage_stats(table.codes[:, d], table.codebook_size) for d in range(table.levels)]
    cosine = (x * x_hat).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1), 1e-12)
    report = {
        "n_items": len(table.codes),
        "collision_rate_before_dedup": shared_share(table.quantized_codes),
        "collision_rate": shared_share(table.codes),
        "max_collision_group": int(table.codes[:, -1].max()) + 1,
        "codebook_utilization": [u for u, _ in usage],
        "perplexity": [p for _, p in usage],
        "reconstruction_mse": float(((x - x_hat) ** 2).mean()),
        "reconstruction_cosine": float(cosine.mean()),
    }
    if categories is not None:
        report.update(prefix_purity(table.codes[:, 0], categories))
    return report


def prefix_purity(first_codes: np.ndarray, categories: Sequence[str]) -> dict:
    """Items grouped by first-level code: the group-size-weighted mean share of each group's top category.

    `prefix_category_purity_shuffled` is the same for randomly permuted codes (seeded): the
    purity that group sizes alone would give.

    >>> prefix_purity(np.array([0, 0, 1, 1]), ["x", "x", "x", "y"])["prefix_category_purity"]
    0.75
    """
    if len(categories) != len(first_codes):
        raise ValueError(f"categories has {len(categories)} entries; expected one per item ({len(first_codes)})")
    shuffled = np.random.default_rng(0).permutation(first_codes)

    def purity(codes: np.ndarray) -> float:
        frame = pd.DataFrame({"code": codes, "category": np.asarray(categories, dtype=object)})
        top = frame.groupby("code")["category"].agg(lambda s: s.value_counts().iloc[0])
        return float(top.sum() / len(frame))

    return {"prefix_category_purity": purity(first_codes), "prefix_category_purity_shuffled": purity(shuffled)}


# --- save / load -------------------------------------------------------------------------------

def save(result: SIDResult, folder: str | Path) -> Path:
    """Write the SID table, quantizer state, history, report and config into `folder`, each atomically.

    `sid_meta.json` is written last: a folder without it is incomplete.
    """
    folder = Path(folder)
    (folder / "sid_meta.json").unlink(missing_ok=True)  # the folder is incomplete until the end
    with runs.atomic_path(folder / "sid_table.parquet") as tmp:
        result.table.to_frame().to_parquet(tmp, index=False)
    with runs.atomic_path(folder / "quantizer.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **result.quantizer.state())
    with runs.atomic_path(folder / "codebooks.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, result.quantizer.codewords())  # (levels, K, latent): for inspection and plots
    with runs.atomic_path(folder / "history.parquet") as tmp:
        result.history.to_parquet(tmp, index=False)
    meta = {"config": result.config, "input_dim": result.quantizer.input_dim,
            "codebook_size": result.table.codebook_size,
            "levels": result.table.levels, "report": result.report}
    runs.write_json(folder / "sid_meta.json", meta)
    return folder


def load(folder: str | Path) -> SIDResult:
    """Read a `SIDResult` written by `save`: the same table, and a quantizer that reconstructs the same."""
    folder = Path(folder)
    if not (folder / "sid_meta.json").is_file():
        raise FileNotFoundError(f"{folder}: no sid_meta.json; this folder was not written by semantic_ids.save() "
                                "(or the save was interrupted): rebuild the SIDs")
    meta = runs.read_json(folder / "sid_meta.json")
    cfg = SIDConfig(**meta["config"])
    frame = artifacts.read(pd.read_parquet, folder / "sid_table.parquet")
    code_columns = [c for c in frame.columns if c.startswith("code_")]
    table = SIDTable(frame[code_columns].to_numpy(np.int64), meta["codebook_size"], meta["levels"])
    with artifacts.reading(folder / "quantizer.npz"), np.load(folder / "quantizer.npz") as npz:
        state = {k: npz[k] for k in npz.files}  # the arrays are read (and a truncation found) here
    quantizer = quant.from_state(cfg, meta["input_dim"], state)
    history = artifacts.read(pd.read_parquet, folder / "history.parquet")
    return SIDResult(table, quantizer, history, meta["report"], cfg)
