"""A seeded simulated shopping platform with explicit negative feedback: the tutorial's default dataset.

The paper's Taobao logs are private (PAPER.md), so this module generates data that shows the same
phenomena, with the users' true negative interests known exactly:

* a catalogue of items in 14 categories; every item has a style, material, colour, feature and price
  tier whose values are shared across categories ("bulky", "leather", "wired", "budget"), a natural
  English title built from them, a Zipf-like popularity and, for some items, a later release day;
* users with a few liked facets and 1-4 ranked **aversion facets** ("material=leather",
  "category=mugs", "tier=budget"), drawn from a skewed distribution so that many users share them;
* a day-by-day platform that shows each active user a slate mixing popular items, items like the
  user's past clicks, and exploration; it **never shows an item again after "not interested"** and
  **hides similar items for `suppression_days`** (similar = same category and at least one shared
  attribute value). The next negative item therefore follows what the platform happened to show,
  not the user's strongest aversion (PAPER.md problem 3);
* per exposure: "not interested" only with a small propensity when the item hits an aversion, a click
  from positive affinity (calibrated so positives are `pos_neg_ratio` times negatives), else a plain
  exposure.

The true dislike of user u for item i is the sum of the strengths of u's aversion facets that i has
(`dislike_scores`); the negative-feedback probability is proportional to it, so the ground truth is exact.
In the "misleading" world (`aversion_scope="liked_categories"`) an aversion counts only inside the categories
the user likes: the user clicks footwear and dismisses bulky footwear, so the positives point at where the
negatives are and at items that look like them.

`simulate_world` returns the same dataset together with the hidden platform state at a chosen day, so
that `conrec_lib.evaluation.ab_test` can run the platform on from there (`slate_weights`, `race_keys`, `top_slates`,
`response`, `feedback_codes` and `update_state` are the steps it reuses).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp
from conrec_lib.progress import tqdm

from conrec_lib.data import dataset as data
from conrec_lib.configs import check_types


class Category(NamedTuple):
    """What a category's items can be: title nouns (not facets), materials and features."""

    nouns: tuple[str, ...]
    materials: tuple[str, ...]
    features: tuple[str, ...]


CATEGORIES: dict[str, Category] = {
    "boots": Category(("hiking boots", "ankle boots", "rain boots", "chelsea boots"),
                      ("leather", "rubber", "canvas", "suede"), ("waterproof", "insulated", "lace-up")),
    "sneakers": Category(("running sneakers", "high-top sneakers", "slip-on sneakers"),
                         ("leather", "canvas", "mesh", "suede"), ("lace-up", "lightweight", "waterproof")),
    "earphones": Category(("in-ear earphones", "over-ear headphones", "earbuds"),
                          ("plastic", "metal", "leather"), ("wired", "wireless", "noise-cancelling")),
    "jackets": Category(("rain jacket", "down jacket", "bomber jacket", "fleece jacket"),
                        ("leather", "nylon", "wool", "denim"), ("waterproof", "insulated", "hooded")),
    "backpacks": Category(("hiking backpack", "laptop backpack", "school backpack"),
                          ("leather", "canvas", "nylon"), ("waterproof", "foldable", "usb-charging")),
    "lamps": Category(("desk lamp", "floor lamp", "bedside lamp"),
                      ("metal", "wood", "glass", "ceramic"), ("dimmable", "smart", "usb-charging", "wired")),
    "mugs": Category(("coffee mug", "travel mug", "tea mug"),
                     ("ceramic", "glass", "metal", "plastic"), ("insulated", "heated", "handmade")),
    "watches": Category(("smartwatch", "dive watch", "dress watch"),
                        ("leather", "metal", "plastic", "rubber"), ("waterproof", "smart", "solar")),
    "chairs": Category(("office chair", "folding chair", "armchair"),
                       ("leather", "wood", "metal", "plastic"), ("foldable", "heated", "adjustable")),
    "phone cases": Category(("phone case", "wallet phone case"),
                            ("leather", "plastic", "rubber", "wood"), ("waterproof", "magnetic", "shockproof")),
    "sunglasses": Category(("aviator sunglasses", "sport sunglasses", "round sunglasses"),
                           ("metal", "plastic", "wood"), ("polarized", "foldable", "lightweight")),
    "water bottles": Category(("water bottle", "sports bottle"),
                              ("metal", "glass", "plastic"), ("insulated", "foldable", "smart")),
    "keyboards": Category(("mechanical keyboard", "compact keyboard"),
                          ("plastic", "metal", "wood"), ("wired", "wireless", "backlit")),
    "speakers": Category(("bluetooth speaker", "bookshelf speaker", "smart speaker"),
                         ("plastic", "metal", "wood"), ("wired", "wireless", "waterproof", "smart")),
}
STYLES = ("bulky", "slim", "retro", "minimalist", "sporty", "cute", "rugged", "flashy")
COLORS = ("black", "white", "grey", "pink", "neon", "camo", "brown", "navy")
TIERS = ("budget", "mid-range", "premium", "luxury")
ATTRIBUTES = ("style", "material", "color", "feature", "tier")  # facet columns besides `category`
TIER_WORDS = {"budget": "budget ", "mid-range": "", "premium": "premium ", "luxury": "luxury "}
BRAND_SYLLABLES = ("ko", "ra", "vi", "ne", "lu", "mar", "to", "sen", "da", "fi", "gor", "bel", "zan", "ty", "quo")
# Which facet column an aversion is on: an attribute across categories, a whole category, or a price tier.
AVERSION_KINDS = {"style": 0.15, "material": 0.15, "color": 0.15, "feature": 0.15, "category": 0.25, "tier": 0.15}
TIER_AVERSION = {"budget": 0.45, "luxury": 0.3, "premium": 0.2, "mid-range": 0.05}  # P(tier | tier aversion)
N_AVERSIONS_P = (0.25, 0.35, 0.25, 0.15)  # P(1), P(2), P(3), P(4) aversion facets per user
# Which facet columns aversions may be on (`SimConfig.aversion_kinds`): "attributes" leaves out the coarse kinds
# (a whole category, a price tier), so each aversion covers fewer items.
KIND_SETS = {"mixed": AVERSION_KINDS,
             "attributes": {"style": 0.25, "material": 0.25, "color": 0.25, "feature": 0.25}}
MAX_AVERSIONS = 12
# Where a user's aversions apply (`SimConfig.aversion_scope`): "anywhere" (a "bulky" aversion covers every bulky
# item) or "liked_categories" (only inside the categories the user likes, as in the paper's Figure 1: a user who
# buys footwear but dismisses bulky footwear). There the positive history points at the very categories whose
# other items the user dismisses: it can mislead a model that reads "clicked" as "like this".
AVERSION_SCOPES = ("anywhere", "liked_categories")
# Named worlds: the values of the world-level SimConfig fields left None. "default" is the tutorial's world
# (bit for bit the one before these fields existed); "paper" is calibrated towards the paper's coverage of
# negative interests by benchmarks/calibrate_world.py (docs/calibration.md).
WORLDS = {
    "default": dict(n_aversions=(1, 4), aversion_kinds="mixed", unrelated_dislike=0.0,
                    target_negatives_per_user=None),
    "paper": dict(n_aversions=(8, 12), aversion_kinds="mixed", unrelated_dislike=0.15,
                  target_negatives_per_user=10.0),
    # aversions on attributes inside the liked categories (AVERSION_SCOPES). Measured (seed 0, default scale): with
    # the default world's 1-4 aversions such a world logs at most 6.2 negatives per user (neg_propensity 1: the
    # platform hides a category's items sharing an attribute with a dismissed one for suppression_days); 4-8 give 11.6 at most,
    # so the preset takes 4-8 and the paper world's 10 negatives per user
    "misleading": dict(n_aversions=(4, 8), aversion_kinds="attributes", unrelated_dislike=0.0,
                       target_negatives_per_user=10.0, aversion_scope="liked_categories"),
}
WORLD_DEFAULTS = {"aversion_scope": "anywhere"}  # world fields a preset may leave out
PILOT_USERS = 150  # users of the pilot worlds that tune neg_propensity (tuned_propensity)
TUNING_STEPS = 7  # bisection steps over log(neg_propensity) in [1e-3, 1]: about 5% precision

# Sizes per scale: n_items, n_users, n_days, slate_size.
SCALES = {
    "tiny": dict(n_items=150, n_users=60, n_days=14, slate_size=20),  # tests, < 1 s
    "small": dict(n_items=600, n_users=300, n_days=28, slate_size=20),
    "default": dict(n_items=2000, n_users=1000, n_days=28, slate_size=20),  # tutorial, a few seconds
    "large": dict(n_items=20000, n_users=10000, n_days=28, slate_size=20),  # GPU-scale machine (~10 GB RAM)
}
VOCAL_SHAPE = 3.0  # users' "not interested" propensity multiplier ~ Gamma(shape, 1/shape), mean 1
PURCHASE_SHARE = 0.15  # share of positives recorded as "purchase" rather than "click" (raw label only)
MAX_PROB = 0.95  # cap on any per-exposure feedback probability
NEW_ITEM_DAYS = 3  # days after release during which a cold-start item gets `new_item_boost`
LICENCE = "CC0-1.0 (synthetic data generated by conrec_lib.data.simulate)"
CITATION = ("Simulated shopping platform of the conrec tutorial (conrec_lib/data/simulate.py), modelled on the "
            "setting of Chen et al., CoNRec: Context-Discerning Negative Recommendation with LLMs, "
            "arXiv:2601.15721 (2026).")


@dataclasses.dataclass
class SimConfig:
    """How the simulated platform is generated. `None` sizes come from the `scale` preset.

    The preset is resolved in `__post_init__`, so `dataclasses.asdict(cfg)` holds the sizes used
    (and `dataclasses.replace(cfg, scale=...)` keeps the old sizes: build a new SimConfig instead).
    """

    seed: int = 0
    scale: str = "default"  # tiny | small | default | large (GPU: large)
    # sizes (None: from the preset)
    n_items: Optional[int] = None
    n_users: Optional[int] = None
    n_days: Optional[int] = None
    slate_size: Optional[int] = None  # items shown per active user per day
    # catalogue
    cold_start_share: float = 0.15  # share of items released after day 0 (cold start)
    popularity_exponent: float = 1.0  # Zipf exponent of item popularity
    new_item_boost: float = 3.0  # exposure weight of a cold-start item in its first NEW_ITEM_DAYS days
    # users
    activity: float = 0.8  # mean share of days a user is active
    aversion_concentration: float = 1.0  # Zipf exponent over facets: higher = aversions shared by more users
    # platform (slate mixture weights, normalised)
    mix_popular: float = 0.3
    mix_personal: float = 0.5  # items sharing facets with the user's past clicks
    mix_explore: float = 0.2  # uniform over the available catalogue
    personal_sharpness: float = 3.0  # how strongly the personal part follows the click profile
    repeat_decay: float = 0.5  # weight multiplier per earlier exposure of the same item to the user
    suppression_days: int = 5  # after "not interested", similar items are hidden this many days (0: off)
    # feedback
    neg_propensity: float = 0.3  # P("not interested") per unit of dislike for an average user
    pos_neg_ratio: float = 4.0  # positives per negative (clicks are calibrated each day to meet it)
    # world (None: from the `world` preset, WORLDS; docs/calibration.md)
    world: str = "default"  # default | paper (calibrated towards the paper's interest coverage)
    n_aversions: Optional[tuple[int, int]] = None  # (min, max) aversion facets per user; (1, 4) draws
    # N_AVERSIONS_P, any other range uniformly. default: (1, 4); paper: finer interests, more facets each
    aversion_kinds: Optional[str] = None  # mixed | attributes (no whole-category or tier aversions); KIND_SETS
    unrelated_dislike: Optional[float] = None  # dislike added to every item: "not interested" unrelated to
    # any aversion (in aversion-strength units, 0.3-1.0 each); it does not damp clicks
    target_negatives_per_user: Optional[float] = None  # set: neg_propensity is re-tuned to give about this
    # many negatives per user (`tuned_propensity`, done by simulate_world); default world: off (19.7 measured)
    aversion_scope: Optional[str] = None  # anywhere | liked_categories (AVERSION_SCOPES); default: anywhere

    def __post_init__(self) -> None:
        check_types(self)
        if self.scale not in SCALES:
            raise ValueError(f"SimConfig.scale={self.scale!r} is not known; use one of {list(SCALES)}")
        for name, value in SCALES[self.scale].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.world not in WORLDS:
            raise ValueError(f"SimConfig.world={self.world!r} is not known; use one of {list(WORLDS)}")
        for name, value in {**WORLD_DEFAULTS, **WORLDS[self.world]}.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.n_aversions = tuple(self.n_aversions)
        self._check_sizes()
        self._check_rates()
        self._check_world()

    def _check_sizes(self) -> None:
        for name in ("seed", "n_items", "n_users", "n_days", "slate_size", "suppression_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SimConfig.{name}={value!r}: must be an integer")
        if self.n_items < len(CATEGORIES):
            raise ValueError(f"SimConfig.n_items={self.n_items}: need at least one item per category; "
                             f"set n_items >= {len(CATEGORIES)}")
        if self.n_users < 1:
            raise ValueError(f"SimConfig.n_users={self.n_users}: set n_users >= 1")
        if self.n_days < 2:
            raise ValueError(f"SimConfig.n_days={self.n_days}: need a history day and a future day; set n_days >= 2")
        if not 1 <= self.slate_size <= self.n_items:
            raise ValueError(f"SimConfig.slate_size={self.slate_size}: set 1 <= slate_size <= n_items ({self.n_items})")
        if self.suppression_days < 0:
            raise ValueError(f"SimConfig.suppression_days={self.suppression_days}: set >= 0 (0 turns it off)")

    def _check_rates(self) -> None:
        in_range = {"cold_start_share": (0.0, 0.9), "activity": (0.01, 1.0), "neg_propensity": (1e-6, 1.0),
                    "repeat_decay": (0.0, 1.0)}
        for name, (low, high) in in_range.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"SimConfig.{name}={getattr(self, name)}: set it within [{low}, {high}]")
        non_negative = ("popularity_exponent", "aversion_concentration", "mix_popular", "mix_personal",
                        "mix_explore", "personal_sharpness", "new_item_boost")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"SimConfig.{name}={getattr(self, name)}: must be >= 0")
        if self.mix_popular + self.mix_personal + self.mix_explore <= 0:
            raise ValueError("SimConfig.mix_popular/mix_personal/mix_explore are all 0; give one a positive weight")
        if self.pos_neg_ratio <= 0:
            raise ValueError(f"SimConfig.pos_neg_ratio={self.pos_neg_ratio}: must be > 0 (e.g. 4.0)")

    def _check_world(self) -> None:
        low, high = self.n_aversions
        if not 1 <= low <= high <= MAX_AVERSIONS:
            raise ValueError(f"SimConfig.n_aversions={self.n_aversions}: give (min, max) with "
                             f"1 <= min <= max <= {MAX_AVERSIONS}, e.g. (1, 4)")
        if self.aversion_kinds not in KIND_SETS:
            raise ValueError(f"SimConfig.aversion_kinds={self.aversion_kinds!r} is not known; use one of "
                             f"{list(KIND_SETS)}")
        if not 0 <= self.unrelated_dislike <= 2:
            raise ValueError(f"SimConfig.unrelated_dislike={self.unrelated_dislike}: set it within [0, 2] "
                             "(0: every negative comes from an aversion)")
        if self.aversion_scope not in AVERSION_SCOPES:
            raise ValueError(f"SimConfig.aversion_scope={self.aversion_scope!r} is not known; use one of "
                             f"{list(AVERSION_SCOPES)}")
        if self.aversion_scope == "liked_categories" and self.aversion_kinds != "attributes":
            raise ValueError(f"SimConfig.aversion_scope='liked_categories' with aversion_kinds="
                             f"{self.aversion_kinds!r}: aversions inside liked categories must be on attributes; "
                             "set aversion_kinds='attributes'")
        target = self.target_negatives_per_user
        if target is not None and not 0.5 <= target <= 0.5 * self.n_days * self.slate_size:
            raise ValueError(f"SimConfig.target_negatives_per_user={target}: set None (keep neg_propensity) or a "
                             f"number within [0.5, {0.5 * self.n_days * self.slate_size:g}] (half of all exposures)")

    def aversion_count_p(self) -> np.ndarray:
        """P(1), P(2), ... aversion facets per user: N_AVERSIONS_P for (1, 4), else uniform over the range.

        >>> SimConfig(scale="tiny", n_aversions=(2, 3)).aversion_count_p().tolist()
        [0.0, 0.5, 0.5]
        """
        low, high = self.n_aversions
        if (low, high) == (1, 4):
            return np.asarray(N_AVERSIONS_P)
        p = np.zeros(high)
        p[low - 1:] = 1.0 / (high - low + 1)
        return p


# --- catalogue --------------------------------------------------------------------------------------

class Catalogue(NamedTuple):
    """Items plus the matrices the platform needs."""

    items: pd.DataFrame  # the data-model items table (+ attributes, brand, release_day)
    facets: list[str]  # all facet strings "column=value", in matrix column order
    facet_matrix: np.ndarray  # (I, F) float32, 1 where the item has the facet
    popularity: np.ndarray  # (I,) float64, sums to 1
    similar: sp.csr_matrix  # (I, I) 1 where j is suppressed after a negative on i


def _brands(rng: np.random.Generator, per_tier: int = 5) -> dict[str, list[str]]:
    """Invented brand names, `per_tier` per price tier (titles then differ within a facet combination)."""
    names: list[str] = []
    while len(names) < per_tier * len(TIERS):
        name = "".join(rng.choice(BRAND_SYLLABLES, size=rng.integers(2, 4))).capitalize()
        if name not in names:
            names.append(name)
    return {tier: names[t * per_tier:(t + 1) * per_tier] for t, tier in enumerate(TIERS)}


def _item_rows(cfg: SimConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Draw category, attributes, brand and title of every item."""
    names = list(CATEGORIES)
    shares = rng.dirichlet(np.full(len(names), 5.0))
    cats = np.concatenate([np.arange(len(names)), rng.choice(len(names), cfg.n_items - len(names), p=shares)])
    brands = _brands(rng)
    rows = []
    for c in rng.permutation(cats):
        spec = CATEGORIES[names[c]]
        row = {"category": names[c], "style": rng.choice(STYLES), "material": rng.choice(spec.materials),
               "color": rng.choice(COLORS), "feature": rng.choice(spec.features), "tier": rng.choice(TIERS)}
        row["brand"] = rng.choice(brands[row["tier"]])
        row["title"] = (f"{row['brand']} {TIER_WORDS[row['tier']]}{row['style']} {row['color']} "
                        f"{row['material']} {row['feature']} {rng.choice(spec.nouns)}")
        rows.append(row)
    return pd.DataFrame(rows)


def _similar_items(items: pd.DataFrame) -> sp.csr_matrix:
    """(I, I): same category and at least one shared attribute value; the item itself excluded."""
    keys = pd.concat([items["category"] + "|" + a + "=" + items[a].astype(str) for a in ATTRIBUTES], axis=1)
    codes, _ = pd.factorize(keys.to_numpy().ravel())
    rows = np.repeat(np.arange(len(items)), len(ATTRIBUTES))
    onehot = sp.csr_matrix((np.ones(len(codes), np.float32), (rows, codes)))
    sim = (onehot @ onehot.T).tocsr()
    sim.setdiag(0)
    sim.eliminate_zeros()
    sim.data[:] = 1
    return sim


def make_catalogue(cfg: SimConfig, rng: np.random.Generator) -> Catalogue:
    """The item catalogue: attributes, titles, Zipf popularity, release days, facet and similarity matrices."""
    items = _item_rows(cfg, rng)
    n = len(items)
    cold = rng.random(n) < cfg.cold_start_share
    items["release_day"] = np.where(cold, rng.integers(1, cfg.n_days, n), 0).astype(np.int64)
    items.insert(0, "item_id", np.arange(n, dtype=np.int64))
    items.insert(1, "raw_id", [f"sim-{i:06d}" for i in range(n)])
    items = items[["item_id", "raw_id", "title", "category", *ATTRIBUTES, "brand", "release_day"]]
    ranks = rng.permutation(n) + 1
    popularity = ranks.astype(np.float64) ** -cfg.popularity_exponent
    per_item = [sorted(f"{c}={v}" for c, v in zip(("category", *ATTRIBUTES), row))
                for row in items[["category", *ATTRIBUTES]].to_numpy()]
    facets = sorted({f for fs in per_item for f in fs})
    col = {f: j for j, f in enumerate(facets)}
    matrix = np.zeros((n, len(facets)), np.float32)
    for i, fs in enumerate(per_item):
        matrix[i, [col[f] for f in fs]] = 1.0
    return Catalogue(items, facets, matrix, popularity / popularity.sum(), _similar_items(items))


# --- users ------------------------------------------------------------------------------------------

class Users(NamedTuple):
    """Latent users: liked facets, ranked aversion facets, activity and how vocal they are."""

    aversions: pd.DataFrame  # ground truth: user_id, rank, facet, strength
    likes: pd.DataFrame  # user_id, facet, weight
    dislike: np.ndarray  # (U, F) float32 aversion strength per facet
    affinity: np.ndarray  # (U, F) float32 like weight per facet
    activity: np.ndarray  # (U,) probability of being active on a day
    vocal: np.ndarray  # (U,) multiplier of the "not interested" propensity (mean 1)
    scope: Optional[np.ndarray] = None  # (U, C) 1 where the user's aversions apply, C in CATEGORIES order; None: anywhere


def _facet_prior(cat: Catalogue, exponent: float, rng: np.random.Generator) -> dict[str, pd.Series]:
    """Per aversion kind (a facet column), a distribution over its values that many users share.

    Values get Zipf weights in a seeded order; an attribute value is further weighted by the share of
    categories it occurs in, so that typical aversions ("bulky", "leather", "wired") span categories.
    Tiers use TIER_AVERSION (nobody much minds "mid-range").
    """
    spans = pd.Series(((cat.facet_matrix.T @ _category_onehot(cat.items)) > 0).sum(axis=1), index=cat.facets)
    prior = {}
    for kind in AVERSION_KINDS:
        members = [f for f in cat.facets if f.startswith(f"{kind}=")]
        if kind == "tier":
            weights = np.array([TIER_AVERSION[f.split("=", 1)[1]] for f in members])
        else:
            weights = (rng.permutation(len(members)) + 1.0) ** -exponent * spans[members].to_numpy()
        prior[kind] = pd.Series(weights / weights.sum(), index=members)
    return prior


def category_codes(items: pd.DataFrame) -> np.ndarray:
    """(I,) each item's category as its position in CATEGORIES."""
    return pd.Categorical(items["category"], categories=list(CATEGORIES)).codes.astype(np.int64)


def _category_onehot(items: pd.DataFrame) -> np.ndarray:
    """(I, C) float32 one-hot of the item's category, in CATEGORIES order."""
    return np.eye(len(CATEGORIES), dtype=np.float32)[category_codes(items)]


def _draw_aversions(prior: dict, count_p: np.ndarray, kinds: dict[str, float],
                    rng: np.random.Generator) -> list[str]:
    """Distinct aversion facets of one user (how many: `count_p`; of which kinds: `kinds`), strongest first."""
    n = min(rng.choice(len(count_p), p=count_p) + 1, sum(len(prior[k]) for k in kinds))
    chosen: list[str] = []
    while len(chosen) < n:
        kind = rng.choice(list(kinds), p=list(kinds.values()))
        facet = rng.choice(prior[kind].index, p=prior[kind].to_numpy())
        if facet not in chosen:
            chosen.append(str(facet))
    return chosen


def _draw_likes(facets: list[str], avoid: set[str], rng: np.random.Generator) -> dict[str, float]:
    """1-3 liked categories and 1-3 liked attribute facets, none of them an aversion (no contradiction)."""
    cats = [f for f in facets if f.startswith("category=") and f not in avoid]
    attrs = [f for f in facets if not f.startswith("category=") and f not in avoid]
    liked_cats = rng.choice(cats, size=min(len(cats), rng.integers(1, 4)), replace=False)
    liked_attrs = rng.choice(attrs, size=min(len(attrs), rng.integers(1, 4)), replace=False)
    likes = {str(f): w for f, w in zip(liked_cats, (1.0, 0.7, 0.5))}
    likes.update({str(f): float(rng.uniform(0.3, 0.8)) for f in liked_attrs})
    return likes


def _prior_within(prior: dict[str, pd.Series], kinds: dict[str, float], allowed: set[str]
                  ) -> tuple[dict[str, pd.Series], dict[str, float]]:
    """`prior` and `kinds` restricted to the facets in `allowed` (renormalised; kinds left empty dropped)."""
    kept = {k: prior[k][prior[k].index.isin(allowed)] for k in kinds}
    kept = {k: p / p.sum() for k, p in kept.items() if len(p) and p.sum() > 0}
    weights = {k: kinds[k] for k in kept}
    total = sum(weights.values())
    return kept, {k: w / total for k, w in weights.items()}


def _scoped_user(prior: dict, count_p: np.ndarray, kinds: dict[str, float], cat: Catalogue,
                 facets_of: dict[str, set[str]], rng: np.random.Generator) -> tuple[list[str], dict[str, float], list[str]]:
    """aversion_scope="liked_categories": likes first, then aversions among the attribute values that occur in the
    liked categories (none of them a liked attribute). Returns aversions, likes and the liked categories."""
    likes = _draw_likes(cat.facets, set(), rng)
    liked_cats = [f.split("=", 1)[1] for f in likes if f.startswith("category=")]
    allowed = set().union(*(facets_of[c] for c in liked_cats)) - set(likes)
    within, within_kinds = _prior_within(prior, kinds, allowed)
    return _draw_aversions(within, count_p, within_kinds, rng), likes, liked_cats


def make_users(cfg: SimConfig, cat: Catalogue, rng: np.random.Generator) -> Users:
    """Latent users: aversions from a shared skewed prior, likes that never contradict them.

    With `aversion_scope="liked_categories"` each aversion applies only inside the user's liked categories
    (`Users.scope`; the ground truth's `scope` column names them)."""
    prior = _facet_prior(cat, cfg.aversion_concentration, rng)
    col = {f: j for j, f in enumerate(cat.facets)}
    dislike = np.zeros((cfg.n_users, len(cat.facets)), np.float32)
    affinity = np.zeros_like(dislike)
    aversion_rows, like_rows = [], []
    count_p, kinds = cfg.aversion_count_p(), KIND_SETS[cfg.aversion_kinds]
    scoped = cfg.aversion_scope == "liked_categories"
    scope = np.zeros((cfg.n_users, len(CATEGORIES)), np.float32) if scoped else None
    facets_of = {c: {f for f, has in zip(cat.facets, cat.facet_matrix[(cat.items["category"] == c).to_numpy()].any(0))
                     if has and not f.startswith("category=")} for c in CATEGORIES} if scoped else {}
    for u in range(cfg.n_users):
        if scoped:
            aversions, likes, liked_cats = _scoped_user(prior, count_p, kinds, cat, facets_of, rng)
            scope[u, [list(CATEGORIES).index(c) for c in liked_cats]] = 1.0
            where = ("|".join(sorted(liked_cats)),)
        else:
            aversions, where = _draw_aversions(prior, count_p, kinds, rng), ()
        strengths = np.sort(rng.uniform(0.3, 1.0, len(aversions)))[::-1]
        for rank, (facet, s) in enumerate(zip(aversions, strengths)):
            aversion_rows.append((u, rank, facet, float(s), *where))
            dislike[u, col[facet]] = s
        for facet, w in (likes if scoped else _draw_likes(cat.facets, set(aversions), rng)).items():
            like_rows.append((u, facet, w))
            affinity[u, col[facet]] = w
    a = cfg.activity
    activity = rng.beta(8 * a, 8 * (1 - a) + 1e-3, cfg.n_users) if a < 1 else np.ones(cfg.n_users)
    vocal = rng.gamma(VOCAL_SHAPE, 1 / VOCAL_SHAPE, cfg.n_users)  # a few users almost never say "not interested"
    columns = ["user_id", "rank", "facet", "strength", *(["scope"] if scoped else [])]
    return Users(pd.DataFrame(aversion_rows, columns=columns),
                 pd.DataFrame(like_rows, columns=["user_id", "facet", "weight"]),
                 dislike, affinity, activity, vocal, scope)


# --- the platform, day by day ----------------------------------------------------------------------

HIDDEN_FOREVER = np.iinfo(np.int16).max


class PlatformState(NamedTuple):
    """What the platform remembers about each user (mutated in place day by day)."""

    hidden_until: np.ndarray  # (U, I) int16: item hidden while day < value (HIDDEN_FOREVER after a negative)
    shown: np.ndarray  # (U, I) uint8 exposure count (saturates at 255)
    clicks: np.ndarray  # (U, F) float32 facet counts of clicked items (the recommender's profile)


class DayLog(NamedTuple):
    """One day's exposures, in display order per user."""

    user: np.ndarray  # (E,) int64
    item: np.ndarray  # (E,) int64
    position: np.ndarray  # (E,) int64 position in the user's slate
    feedback: np.ndarray  # (E,) int8 index into data.FEEDBACK


def _normalise(w: np.ndarray) -> np.ndarray:
    """Rows of `w` scaled to sum to 1 (all-zero rows stay zero).

    >>> _normalise(np.array([[1.0, 3.0], [0.0, 0.0]]))
    array([[0.25, 0.75],
           [0.  , 0.  ]])
    """
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def slate_weights(users: np.ndarray, day: int, state: PlatformState, cat: Catalogue, cfg: SimConfig) -> np.ndarray:
    """(U, I) exposure weights: popular + like past clicks + exploration, over items the user may see."""
    released = (cat.items["release_day"].to_numpy() <= day)
    avail = (state.hidden_until[users] <= day) & released  # (U, I)
    pop = cat.popularity.astype(np.float32)
    profile = _normalise(state.clicks[users])  # (U, F): share of clicks carrying each facet
    personal = np.exp(cfg.personal_sharpness * (profile @ cat.facet_matrix.T)) * np.sqrt(pop)  # (U, I)
    w = (cfg.mix_popular * _normalise(avail * pop[None, :])
         + cfg.mix_personal * _normalise(avail * personal)
         + cfg.mix_explore * _normalise(avail.astype(np.float32)))
    w *= (cfg.repeat_decay ** np.arange(256, dtype=np.float32))[state.shown[users]]  # decay^times shown
    age = day - cat.items["release_day"].to_numpy()
    new = (cat.items["release_day"].to_numpy() > 0) & (age >= 0) & (age < NEW_ITEM_DAYS)
    w[:, new] *= cfg.new_item_boost
    return w


def _sample_slates(w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(U, k) items drawn without replacement with probability proportional to `w` (-1: nothing left)."""
    race = rng.standard_exponential(size=w.shape, dtype=np.float32)  # (U, I)
    return top_slates(race_keys(w, race), k)


def race_keys(w: np.ndarray, race: np.ndarray) -> np.ndarray:
    """(U, I) exponential-race keys w / E with E ~ Exp(1) given as `race` (overwritten: clipped away from 0).

    The k largest keys are a weighted sample without replacement, in the order a sequential draw would
    pick them; setting an item's key to 0 removes it and the next-largest key takes its place.
    """
    return w / np.maximum(race, np.float32(1e-30), out=race)  # float32 draws can be exactly 0


def top_slates(keys: np.ndarray, k: int) -> np.ndarray:
    """(U, k) the items of the k largest keys per row, largest first; -1 where the key is <= 0 (nothing left).

    >>> top_slates(np.array([[0.5, 2.0, 0.0, 1.0]], np.float32), 3).tolist()
    [[1, 3, 0]]
    >>> top_slates(np.array([[0.0, 2.0, 0.0]], np.float32), 2).tolist()
    [[1, -1]]
    """
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top[np.take_along_axis(keys, top, axis=1) <= 0] = -1
    return top


def _expose(day: int, active: np.ndarray, state: PlatformState, cat: Catalogue, cfg: SimConfig,
            rng: np.random.Generator) -> DayLog:
    """All slates of the day, grouped by user (ascending) and in slate order; feedback still empty."""
    chunk = max(1, 4_000_000 // cfg.n_items)  # bounds the (U, I) working matrices
    users, items, positions = [], [], []
    for start in range(0, len(active), chunk):
        block = active[start:start + chunk]
        slates = _sample_slates(slate_weights(block, day, state, cat, cfg), cfg.slate_size, rng)  # (U, k)
        keep = slates >= 0
        users.append(np.repeat(block, keep.sum(axis=1)))
        items.append(slates[keep])
        positions.append(np.nonzero(keep)[1])
    user, item, position = (np.concatenate(x).astype(np.int64) for x in (users, items, positions))
    return DayLog(user, item, position, np.empty(0, np.int8))


def _click_scale(p_neg: np.ndarray, base: np.ndarray, ratio: float) -> float:
    """Scale s such that sum(min(s * base, MAX_PROB) * (1 - p_neg)) = ratio * sum(p_neg), by fixed point."""
    target = ratio * p_neg.sum()
    room = base * (1 - p_neg)
    scale = target / max(room.sum(), 1e-12)
    for _ in range(5):  # the cap makes it non-linear; a few rescalings converge
        achieved = (np.minimum(scale * base, MAX_PROB) * (1 - p_neg)).sum()
        scale *= target / max(achieved, 1e-12)
    return float(scale)


class Response(NamedTuple):
    """The simulated users' response model for a list of exposures (user[e], item[e])."""

    p_neg: np.ndarray  # (E,) P("not interested")
    p_pos: np.ndarray  # (E,) P(positive), already times (1 - p_neg)
    click_scale: float  # the calibration factor the click probabilities used


def response(user: np.ndarray, item: np.ndarray, users: Users, cat: Catalogue, cfg: SimConfig,
             click_scale: Optional[float] = None) -> Response:
    """P(negative) = neg_propensity * vocal_u * (dislike(u, i) + unrelated_dislike); P(positive | not
    negative) follows affinity, damped by the true dislike, times `click_scale` (None: calibrated on these
    exposures so that positives are about pos_neg_ratio x negatives, as the logged simulation does each day).
    """
    f = cat.facet_matrix[item]  # (E, F)
    dislike = (users.dislike[user] * f).sum(axis=1)  # (E,)
    if users.scope is not None:  # aversions only inside the user's liked categories
        dislike = dislike * users.scope[user, category_codes(cat.items)[item]]
    affinity = (users.affinity[user] * f).sum(axis=1)
    dismiss = dislike + np.float32(cfg.unrelated_dislike) if cfg.unrelated_dislike > 0 else dislike
    p_neg = np.minimum(cfg.neg_propensity * users.vocal[user] * dismiss, MAX_PROB)
    base = (0.1 + affinity) * np.exp(-2.0 * dislike)
    if click_scale is None:
        click_scale = _click_scale(p_neg, base, cfg.pos_neg_ratio)
    p_pos = np.minimum(click_scale * base, MAX_PROB) * (1 - p_neg)
    return Response(p_neg, p_pos, click_scale)


def feedback_codes(resp: Response, r: np.ndarray) -> np.ndarray:
    """(E,) int8: 1 negative if r < p_neg, else 0 positive if r < p_neg + p_pos, else 2 exposure.

    >>> feedback_codes(Response(np.array([0.2, 0.2, 0.2]), np.array([0.5, 0.5, 0.5]), 1.0),
    ...                np.array([0.1, 0.3, 0.9])).tolist()
    [1, 0, 2]
    """
    return np.where(r < resp.p_neg, 1, np.where(r < resp.p_neg + resp.p_pos, 0, 2)).astype(np.int8)


def update_state(day: int, log: DayLog, state: PlatformState, cat: Catalogue, cfg: SimConfig) -> None:
    """Platform memory after the day: block negatives forever, hide similar items, learn from clicks."""
    state.shown[log.user, log.item] = np.minimum(state.shown[log.user, log.item], 254) + 1
    neg = log.feedback == 1
    u_neg, i_neg = log.user[neg], log.item[neg]
    if cfg.suppression_days > 0 and len(i_neg):
        rows = cat.similar[i_neg]  # (N, I) sparse
        u_rep = np.repeat(u_neg, np.diff(rows.indptr))
        until = np.int16(day + 1 + cfg.suppression_days)
        state.hidden_until[u_rep, rows.indices] = np.maximum(state.hidden_until[u_rep, rows.indices], until)
    state.hidden_until[u_neg, i_neg] = HIDDEN_FOREVER
    pos = log.feedback == 0
    np.add.at(state.clicks, log.user[pos], cat.facet_matrix[log.item[pos]])


def _timestamps(day: int, log: DayLog, rng: np.random.Generator) -> np.ndarray:
    """Seconds: day * 86400 + a session start per user + 5-120 s between consecutive items.

    `log` is grouped by user (ascending) and in slate order within a user, as `_expose` builds it.
    """
    _, first, counts = np.unique(log.user, return_index=True, return_counts=True)
    start = rng.integers(6 * 3600, 22 * 3600, len(first))  # a session between 06:00 and 22:00
    cum = np.cumsum(rng.integers(5, 121, len(log.user)))
    elapsed = cum - np.repeat(cum[first], counts)  # 0 for the first item of each session
    return day * data.SECONDS_PER_DAY + np.repeat(start, counts) + elapsed


def _active_days(cfg: SimConfig, users: Users, rng: np.random.Generator) -> np.ndarray:
    """(D, U) bool: who visits on which day; every user visits on at least two days."""
    active = rng.random((cfg.n_days, cfg.n_users)) < users.activity[None, :]
    for u in np.flatnonzero(active.sum(axis=0) < 2):
        active[rng.choice(cfg.n_days, size=2, replace=False), u] = True
    return active


class DayResult(NamedTuple):
    """One simulated day: its interaction rows and the click calibration it used."""

    rows: pd.DataFrame  # user_id, item_id, timestamp, day, code
    click_scale: float


def _run_day(day: int, active: np.ndarray, users: Users, state: PlatformState, cat: Catalogue,
             cfg: SimConfig, rng: np.random.Generator) -> DayResult:
    """Show the slates, draw the feedback, update the platform; return the day's rows."""
    log = _expose(day, active, state, cat, cfg, rng)
    resp = response(log.user, log.item, users, cat, cfg)
    log = log._replace(feedback=feedback_codes(resp, rng.random(len(log.item))))
    update_state(day, log, state, cat, cfg)
    rows = pd.DataFrame({"user_id": log.user, "item_id": log.item, "timestamp": _timestamps(day, log, rng),
                         "day": np.full(len(log.user), day, np.int64), "code": log.feedback})
    return DayResult(rows, resp.click_scale)


def _interactions(days: list[pd.DataFrame], rng: np.random.Generator) -> pd.DataFrame:
    """The data-model interactions table: feedback names, raw labels, sorted by time."""
    inter = pd.concat(days, ignore_index=True).sort_values(["timestamp", "user_id"], kind="stable")
    code = inter.pop("code").to_numpy()
    purchase = rng.random(len(code)) < PURCHASE_SHARE
    raw = np.where(code == 1, "not_interested", np.where(code == 2, "exposure",
                                                         np.where(purchase, "purchase", "click")))
    inter["feedback"] = np.asarray(data.FEEDBACK)[code]
    inter["raw_label"] = raw
    return inter.reset_index(drop=True)[list(data.INTERACTION_COLUMNS)]


class World(NamedTuple):
    """The simulator's hidden state at the start of `start_day`, with the full logged dataset.

    `state` is a copy taken before `start_day` was simulated, so a closed-loop experiment
    (conrec_lib.evaluation.ab_test) can run the platform on from there; `dataset` is exactly `simulate(config)`.
    """

    config: SimConfig
    catalogue: Catalogue
    users: Users
    state: PlatformState  # platform memory at the start of start_day (days < start_day simulated)
    start_day: int
    click_scale: float  # mean daily click calibration over the (up to 7) logged days before start_day
    dataset: data.Dataset  # all n_days of the log, identical to simulate(config)


def _copy_state(state: PlatformState) -> PlatformState:
    return PlatformState(*(a.copy() for a in state))


def negatives_per_user(ds: data.Dataset) -> float:
    """Logged "not interested" rows per user (all users, those without any included)."""
    return float((ds.interactions["feedback"] == "negative").sum() / ds.n_users)


def tuned_propensity(cfg: SimConfig) -> float:
    """The neg_propensity that gives about `cfg.target_negatives_per_user` negatives per user.

    A bisection over log(neg_propensity) in [1e-3, 1] (TUNING_STEPS steps), each step a pilot world with
    the same seed and settings but at most PILOT_USERS users: deterministic, and independent of the
    neg_propensity given (so a tuned config re-tunes to the same value).
    """
    if cfg.target_negatives_per_user is None:
        return cfg.neg_propensity
    # world="default" with every world field given: the pilot keeps them and tunes nothing itself
    pilot = dataclasses.replace(cfg, world="default", n_users=min(cfg.n_users, PILOT_USERS),
                                target_negatives_per_user=None)
    low, high = np.log(1e-3), 0.0
    for _ in range(TUNING_STEPS):
        mid = (low + high) / 2
        got = negatives_per_user(simulate(dataclasses.replace(pilot, neg_propensity=float(np.exp(mid)))))
        low, high = (mid, high) if got < cfg.target_negatives_per_user else (low, mid)
    if high == 0.0 or low == np.log(1e-3):  # never left an end of the bracket
        warnings.warn(f"SimConfig.target_negatives_per_user={cfg.target_negatives_per_user} is out of reach "
                      f"with neg_propensity in [1e-3, 1] (last pilot: {got:.1f} negatives per user); "
                      "using the nearest end", stacklevel=2)
    return float(np.exp((low + high) / 2))


def _world_note(cfg: SimConfig) -> str:
    return "" if cfg.world == "default" else f", world={cfg.world!r}"


def simulate_world(cfg: SimConfig, start_day: Optional[int] = None, progress: bool = False) -> World:
    """`simulate(cfg)` plus the platform state at the start of `start_day` (None: after the last day).

    With `target_negatives_per_user` set, neg_propensity is tuned first (`tuned_propensity`) and
    `World.config` holds the tuned value.
    """
    start_day = cfg.n_days if start_day is None else start_day
    if not 1 <= start_day <= cfg.n_days:
        raise ValueError(f"simulate_world: start_day={start_day}; use 1..n_days ({cfg.n_days}) or None (the end)")
    if cfg.target_negatives_per_user is not None:
        cfg = dataclasses.replace(cfg, neg_propensity=tuned_propensity(cfg))
    rng = np.random.default_rng(cfg.seed)
    cat = make_catalogue(cfg, rng)
    users = make_users(cfg, cat, rng)
    state = PlatformState(np.zeros((cfg.n_users, cfg.n_items), np.int16),
                          np.zeros((cfg.n_users, cfg.n_items), np.uint8),
                          np.zeros((cfg.n_users, len(cat.facets)), np.float32))
    active = _active_days(cfg, users, rng)
    days, snapshot = [], None
    for day in tqdm(range(cfg.n_days), desc="simulating days", disable=not progress):
        snapshot = _copy_state(state) if day == start_day else snapshot
        days.append(_run_day(day, np.flatnonzero(active[day]), users, state, cat, cfg, rng))
    ds = data.Dataset(
        name="simulated", interactions=_interactions([d.rows for d in days], rng), items=cat.items,
        licence=LICENCE, citation=f"{CITATION} Generated with SimConfig(seed={cfg.seed}, scale={cfg.scale!r}{_world_note(cfg)}).",
        attributes=ATTRIBUTES, ground_truth=users.aversions)
    scale = float(np.mean([d.click_scale for d in days[max(0, start_day - 7):start_day]]))
    return World(cfg, cat, users, state if snapshot is None else snapshot, start_day, scale, ds)


def simulate(cfg: SimConfig, progress: bool = False) -> data.Dataset:
    """Generate the simulated platform's catalogue, users and `n_days` of logs (deterministic for a seed)."""
    return simulate_world(cfg, progress=progress).dataset


# --- ground truth -----------------------------------------------------------------------------------

def _ground_truth(ds: data.Dataset) -> pd.DataFrame:
    if ds.ground_truth is None:
        raise ValueError(f"dataset {ds.name!r} has no ground truth; only simulate() datasets know true aversions")
    return ds.ground_truth


def dislike_scores(ds: data.Dataset) -> np.ndarray:
    """(n_users, n_items) true dislike: the sum of strengths of the user's aversion facets the item has.

    This is the simulator's own model ("not interested" probability is proportional to it).
    """
    gt = _ground_truth(ds)
    item_facets = data.item_facets(ds)
    facets = sorted(set().union(*item_facets) | set(gt["facet"]))
    col = {f: j for j, f in enumerate(facets)}
    has = np.zeros((len(item_facets), len(facets)), np.float64)  # (I, F)
    for i, fs in enumerate(item_facets):
        has[i, [col[f] for f in fs]] = 1.0
    strength = np.zeros((int(gt["user_id"].max()) + 1, len(facets)))  # (U, F)
    strength[gt["user_id"].to_numpy(), gt["facet"].map(col).to_numpy()] = gt["strength"].to_numpy()
    scores = strength @ has.T
    if "scope" in gt.columns:  # aversion_scope="liked_categories": only inside the categories each row names
        scope = gt.groupby("user_id")["scope"].first()
        inside = np.zeros_like(scores, dtype=bool)
        category = ds.items["category"].to_numpy()
        for u, cats in scope.items():
            inside[int(u)] = np.isin(category, cats.split("|"))
        scores = scores * inside
    return scores


def top_interests(ds: data.Dataset, k: int) -> dict[int, list[str]]:
    """Each user's k strongest aversion facets, strongest first (fewer if the user has fewer)."""
    if k < 1:
        raise ValueError(f"top_interests: k={k}; use k >= 1")
    gt = _ground_truth(ds).sort_values(["user_id", "rank"])
    gt = gt[gt["rank"] < k]
    return {int(u): list(g["facet"]) for u, g in gt.groupby("user_id", sort=True)}
