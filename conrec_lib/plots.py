"""Every figure of the tutorial: titled, with labelled axes and units. Each returns the Axes/Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

FEEDBACK_COLORS = {"positive": "#2b8cbe", "negative": "#e34a33", "exposure": "#bdbdbd"}


def _axes(ax=None, figsize=(7, 3.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def feedback_per_day(per_day: pd.DataFrame, ax=None, log: bool = False):
    """Stacked bars: interactions per day (rows = day) by feedback type (columns)."""
    ax = _axes(ax)
    bottom = np.zeros(len(per_day))
    for kind in [c for c in FEEDBACK_COLORS if c in per_day.columns]:
        ax.bar(per_day.index, per_day[kind], bottom=bottom, color=FEEDBACK_COLORS[kind], label=kind)
        bottom += per_day[kind].to_numpy()
    ax.set(title="Interactions per day", xlabel="day", ylabel="interactions (count)")
    if log:
        ax.set_yscale("log")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def sequence_lengths(lengths: Mapping[str, Sequence[int]], ax=None):
    """Histogram of per-user sequence lengths for each feedback type (log-spaced bins)."""
    ax = _axes(ax)
    top = max(max(v, default=1) for v in lengths.values())
    bins = np.unique(np.logspace(0, np.log10(top + 1), 30).astype(int))
    for kind, values in lengths.items():
        ax.hist(np.asarray(values) + 0.5, bins=bins, alpha=0.6, label=f"{kind} (median {np.median(values):.0f})",
                color=FEEDBACK_COLORS.get(kind))
    ax.set(title="Per-user sequence length", xlabel="interactions per user (log scale)", ylabel="users",
           xscale="log")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def heatmap(table: pd.DataFrame, title: str, xlabel: str, ylabel: str, fmt: str = ".2f", ax=None,
            cmap: str = "Reds", colour_by_column: bool = False):
    """Annotated heatmap of a small table; `colour_by_column` shades each column on its own range."""
    import seaborn as sns

    ax = _axes(ax, figsize=(1.2 + 0.9 * table.shape[1], 0.8 + 0.35 * table.shape[0]))
    shade = table
    if colour_by_column:
        lo, hi = table.min(axis=0), table.max(axis=0)
        shade = (table - lo) / (hi - lo).replace(0, 1)
    sns.heatmap(shade, annot=table, fmt=fmt, cmap=cmap, cbar=False, ax=ax)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return ax


def user_timeline(events: pd.DataFrame, ax=None):
    """One user's positives and negatives over time (x = day, y = feedback; stacked dots = same day)."""
    ax = _axes(ax, figsize=(9, 2.6))
    for y, kind in enumerate(["negative", "positive"]):
        sub = events[events["feedback"] == kind]
        stack = sub.groupby("day").cumcount().to_numpy()
        ax.scatter(sub["timestamp"] / 86_400, y + 0.07 * stack, s=16, color=FEEDBACK_COLORS[kind],
                   label=f"{kind} ({len(sub)})")
    ax.set(title="One user's feedback timeline", xlabel="day", yticks=[0, 1],
           yticklabels=["not interested", "clicked / bought"], ylim=(-0.3, 1.8))
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def _wrap(label, width: int = 14) -> str:
    """A tick label broken into lines of at most `width` characters (at spaces).

    >>> _wrap("warm-up model, stage-3 prompt", 14)
    'warm-up model,\\nstage-3 prompt'
    """
    import textwrap

    return "\n".join(textwrap.wrap(str(label), width, break_long_words=False)) or str(label)


def grouped_bars(table: pd.DataFrame, title: str, ylabel: str, ax=None, fmt: str = "{:.2f}"):
    """Grouped bar chart: rows = groups, columns = bars within a group, values annotated, legend outside.

    Few short groups stand on the x axis (labels wrapped); many groups, or long labels, make the bars horizontal
    (groups on the y axis, top to bottom in the table's order) so that no label overlaps another.
    """
    n_groups, n_bars = table.shape
    longest = max((len(str(i)) for i in table.index), default=0)
    horizontal = n_groups * n_bars > 16 or (n_groups > 3 and longest > 16)
    if horizontal:
        ax = _axes(ax, figsize=(7.5, 0.8 + 0.26 * n_groups * n_bars + 0.15 * n_groups))
    else:
        ax = _axes(ax, figsize=(max(5.0, 1.0 + 0.55 * n_groups * n_bars), 3.8))
    width = 0.8 / n_bars
    pos = np.arange(n_groups)
    for j, col in enumerate(table.columns):
        offset = pos + (j - (n_bars - 1) / 2) * width
        values = table[col].to_numpy(dtype=float)
        draw = ax.barh if horizontal else ax.bar
        bars = draw(offset, np.nan_to_num(values), width * 0.92, label=str(col))
        labels = ["" if np.isnan(v) else fmt.format(v) for v in values]
        ax.bar_label(bars, labels=labels, padding=2, fontsize=7, rotation=0 if horizontal or n_bars <= 3 else 90)
    ticks = [_wrap(i, 24 if horizontal else 14) for i in table.index]
    top = np.nanmax(table.to_numpy(dtype=float)) if table.size else 1.0
    if horizontal:
        ax.set_yticks(pos, ticks)
        ax.invert_yaxis()  # first row on top, as in the table
        ax.set_xlim(0, 1.15 * top if top > 0 else 1)
        ax.set(title=title, xlabel=ylabel)
    else:
        ax.set_xticks(pos, ticks, fontsize=8)
        ax.set_ylim(0, (1.15 if n_bars <= 3 else 1.3) * top if top > 0 else 1)
        ax.set(title=title, ylabel=ylabel)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def loss_curves(history: pd.DataFrame, x: str, columns: Sequence[str], title: str, ax=None, log: bool = False):
    """Training curves: one line per column of `history` against `x`."""
    ax = _axes(ax)
    for col in columns:
        ax.plot(history[x], history[col], label=col)
    ax.set(title=title, xlabel=x, ylabel="loss" if len(columns) > 1 else columns[0])
    if log:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    return ax


def code_usage(codes: np.ndarray, codebook_size: int, level_names: Sequence[str] = "abcd"):
    """One histogram per level: how many items use each code (a flat histogram = no collapse)."""
    levels = codes.shape[1]
    fig, axes = plt.subplots(1, levels, figsize=(3.2 * levels, 2.8), sharey=True)
    for lvl, ax in enumerate(np.atleast_1d(axes)):
        size = codebook_size if lvl < levels - 1 or codes[:, lvl].max() < codebook_size else codes[:, lvl].max() + 1
        counts = np.bincount(codes[:, lvl], minlength=size)
        ax.bar(np.arange(len(counts)), counts, width=1.0)
        used = (counts > 0).mean()
        ax.set(title=f"level {level_names[lvl]}: {used:.0%} of codes used", xlabel="code", ylabel="items")
    fig.tight_layout()
    return fig


def embedding_map(xy: np.ndarray, labels: Sequence[str], title: str, ax=None, annotate: Sequence[str] | None = None):
    """2-D scatter of item embeddings coloured by a label (e.g. category)."""
    ax = _axes(ax, figsize=(6.5, 5))
    labels = np.asarray(labels)
    colours = plt.get_cmap("tab20").colors
    for i, lab in enumerate(sorted(set(labels))):
        m = labels == lab
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, label=str(lab), color=colours[i % len(colours)])
    ax.set(title=title, xlabel="component 1", ylabel="component 2")
    ax.legend(frameon=False, fontsize=7, markerscale=2, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    return ax


def pca_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, d) -> (n, 2) principal-component projection, for `embedding_map`."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)


GRPO_PANELS = (("reward", "mean reward"), ("kl", "KL to reference"), ("frac_reward_zero_std", "groups with zero std"),
               ("clip_ratio", "clipped token share"))


def grpo_curves(history: pd.DataFrame, title: str, panels: Sequence[tuple[str, str]] = GRPO_PANELS):
    """GRPO training curves (TRL's logged names) against the step, one panel each; dotted lines mark new stages."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    starts = history.groupby("stage")["step"].min().iloc[1:] if "stage" in history else []
    for ax, (column, label) in zip(axes[0], panels):
        ax.plot(history["step"], history[column], marker=".")
        for step in starts:
            ax.axvline(step - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="GRPO step", ylabel=label, title=label)
    fig.suptitle(title)
    fig.tight_layout()
    return axes[0]


def dataset_bars(tidy: pd.DataFrame, metric: str, title: str, ax=None):
    """One group of bars per dataset, one bar per model: the mean of `metric` over seeds, with the std as an
    error bar (tidy: evaluation.tidy's dataset, model, seed, metric, value). With one seed there is no spread to
    show, and the title and axis say "one seed"."""
    ax = _axes(ax, figsize=(9, 3.8))
    part = tidy[tidy["metric"] == metric]
    n_seeds = part["seed"].nunique() if "seed" in part else 1
    stats = part.groupby(["dataset", "model"], sort=False)["value"].agg(["mean", "std"]).unstack("model")
    datasets, models = list(stats.index), list(stats["mean"].columns)
    width = 0.8 / len(models)
    x = np.arange(len(datasets))
    for j, name in enumerate(models):
        yerr = stats["std"][name].fillna(0) if n_seeds > 1 else None
        ax.bar(x + (j - (len(models) - 1) / 2) * width, stats["mean"][name], width * 0.92, yerr=yerr,
               label=name, capsize=2)
    ax.set_xticks(x, datasets)
    spread = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed, so no error bars"
    ax.set(title=f"{title} ({spread})", ylabel=metric if n_seeds == 1 else f"{metric} (mean over seeds)")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def tradeoff(curve: pd.DataFrame, title: str, chosen: float | None = None, ax=None):
    """The deployment filter's trade-off: share of liked items filtered (x) vs share of negatives filtered (y),
    one point per theta, with the diagonal a random filter would follow."""
    ax = _axes(ax, figsize=(4.5, 4.5))
    ax.plot(curve["positives_filtered"], curve["negatives_filtered"], marker=".",
            label="filter (one point per theta)")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random filter")
    if chosen is not None:
        row = curve.loc[(curve["theta"] - chosen).abs().idxmin()]
        ax.scatter([row["positives_filtered"]], [row["negatives_filtered"]], color="red", zorder=3,
                   label=f"theta = {chosen:.2f}")
    ax.set(title=title, xlabel="share of liked items filtered", ylabel="share of negatives filtered")
    ax.legend(frameon=False, loc="lower right", fontsize=8)
    return ax
