"""The kit's figures, one function each. Every function returns a matplotlib Figure;
:func:`save_figure` writes it as PNG (atomically) so a notebook both shows it inline and
keeps it in the run folder's ``figures/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lurm_lite.io import atomic_path
from lurm_lite.results import SUPERVISED_MARK

sns.set_theme(style="whitegrid", context="notebook")

# Panels per row of :func:`metric_vs_setting`: even, so a task and its _active twin share a row.
PANELS_PER_ROW = 4


def save_figure(fig: matplotlib.figure.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return Path(path)


def behaviors_per_user(counts: np.ndarray) -> matplotlib.figure.Figure:
    """Log-log histogram of behaviours per user |S| (how heavy the tail is, Table 1).

    Bins are logarithmic, so a power-law tail shows as a straight line.
    """
    counts = np.asarray(counts)
    bins = np.unique(np.logspace(0, np.log10(counts.max() + 1), 30).astype(int))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(counts, bins=bins, histtype="stepfilled", alpha=0.7)
    ax.set(xscale="log", yscale="log", xlabel="behaviours per user |S| (log bins)", ylabel="users",
           title=f"Behaviours per user (max {counts.max():,}, median {int(np.median(counts)):,})")
    return fig


def activity_over_time(ts: np.ndarray, history_end_ts: int | None = None) -> matplotlib.figure.Figure:
    """Behaviours per calendar month over the whole span, with the history end marked."""
    months = pd.to_datetime(np.asarray(ts), unit="s").to_period("M")
    per_month = pd.Series(1, index=months).groupby(level=0).sum()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(per_month.index.to_timestamp(), per_month.values, lw=1)
    if history_end_ts is not None:
        ax.axvline(pd.to_datetime(history_end_ts, unit="s"), color="crimson", ls="--", label="history end")
        ax.legend()
    ax.set(xlabel="month", ylabel="behaviours", title="Activity over time")
    return fig


def loss_curve(losses: Sequence[float], title: str, smooth: int = 20) -> matplotlib.figure.Figure:
    """Training loss per step with a moving average."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.35, lw=1, label="step")
    if len(losses) >= smooth:
        kernel = np.ones(smooth) / smooth
        ax.plot(np.arange(smooth - 1, len(losses)), np.convolve(losses, kernel, mode="valid"),
                lw=2, label=f"mean of {smooth}")
    ax.set(xlabel="step", ylabel="InfoNCE loss, eq. (3)", title=title)
    ax.legend()
    return fig


def learning_curve(losses: Sequence[float], curve: pd.DataFrame, title: str) -> matplotlib.figure.Figure:
    """Loss per step (left) and the per-epoch probe metrics against the step (right).

    ``curve`` is ``diagnostics.learning_curve_frame``: columns ``step``, ``metric``, ``value``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    left.plot(np.asarray(losses, dtype=float), lw=1)
    left.set(xlabel="step", ylabel="InfoNCE loss, eq. (3)", title=title)
    for metric, part in curve.groupby("metric", sort=False):
        right.plot(part["step"], part["value"], marker="o", label=metric)
    right.set(xlabel="step", ylabel="probe AUC / top-1", title="Downstream probe after each epoch")
    if len(curve):
        right.legend()
    return fig


def cluster_sizes(sizes: np.ndarray) -> matplotlib.figure.Figure:
    """Histogram of items per interest (cluster), log scale."""
    sizes = np.asarray(sizes)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(sizes[sizes > 0], bins=50, log=True)
    ax.set(xlabel="items per interest", ylabel="interests",
           title=f"Cluster sizes (D = {len(sizes):,}, empty: {(sizes == 0).sum()})")
    return fig


def boi_timeline(rows: np.ndarray, periods: Sequence[str], top: int = 25,
                 interest_names: Sequence[str] | None = None) -> matplotlib.figure.Figure:
    """Heatmap of one user's b_t over time: the ``top`` most used interests x periods.

    ``rows`` is the user's dense (N, D) BoI sequence; ``periods`` the N period labels;
    ``interest_names`` the D row labels (``clustering.interest_labels``; None: ``interest j``).
    """
    rows = np.asarray(rows)
    columns = np.argsort(-rows.sum(axis=0))[:top]
    names = [interest_names[c] if interest_names is not None else f"interest {c}" for c in columns]
    frame = pd.DataFrame(rows[:, columns].T, index=names, columns=list(periods))
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.25 * len(periods)), 0.25 * len(columns) + 1.5))
    sns.heatmap(frame, cmap="viridis", ax=ax, cbar_kws={"label": "b_t = log(1 + count), eq. (4)"})
    ax.set(xlabel="period t", ylabel="", title="One user's Bag-of-Interests timeline")
    return fig


def results_bars(results: Mapping, metric: str = "auc") -> matplotlib.figure.Figure:
    """Bar plot of ``metric`` per task and method from a results.json mapping, with 95% CI.

    With no evaluated task (every task skipped as too small, see ``results["skipped"]``) the
    figure says so instead of plotting. Supervised methods (``results["supervised"]``) are
    marked ``†`` as in the tables.
    """
    supervised = set(results.get("supervised", ()))
    records = []
    for task, methods in results["tasks"].items():
        for method, m in methods.items():
            lo, hi = m.get("auc_ci95", [np.nan, np.nan])
            label = f"{method} {SUPERVISED_MARK}" if method in supervised else method
            records.append({"task": task, "method": label, metric: 100 * m[metric],
                            "lo": 100 * lo, "hi": 100 * hi})
    frame = pd.DataFrame(records, columns=["task", "method", metric, "lo", "hi"])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * frame.task.nunique()), 4))
    if frame.empty:
        ax.text(0.5, 0.5, "No task could be evaluated\n(results.json 'skipped' says why)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    sns.barplot(frame, x="task", y=metric, hue="method", ax=ax)
    if metric == "auc":
        # Error bars from the bootstrap CI, drawn on the bars seaborn placed.
        for bar_group, (_, group) in zip(ax.containers, frame.groupby("method", sort=False)):
            for bar, (_, row) in zip(bar_group, group.iterrows()):
                x = bar.get_x() + bar.get_width() / 2
                ax.plot([x, x], [row.lo, row.hi], color="black", lw=1)
    low = np.nanmin(frame[metric]) if len(frame) else 0
    ax.set(ylim=(max(0, low - 10), 100), ylabel=f"{metric.upper()} (%)", title=f"Downstream {metric.upper()} per task")
    ax.tick_params(axis="x", labelrotation=30)  # task names such as future_Books_active
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small")
    return fig


def metric_vs_setting(frame: pd.DataFrame, setting: str, title: str) -> matplotlib.figure.Figure:
    """Fig. 3 / Fig. 4 style: AUC lines and ACC bars per task against a setting.

    ``frame`` has columns ``task``, ``setting`` (ordered as given), ``auc``, ``acc`` (fractions).
    One panel per task, :data:`PANELS_PER_ROW` to a row (a task and its ``_active`` twin
    side by side).
    """
    tasks = list(dict.fromkeys(frame["task"]))
    n_cols = min(len(tasks), PANELS_PER_ROW)
    n_rows = -(-len(tasks) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.ravel()[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.ravel(), tasks):
        part = frame[frame["task"] == task]
        labels = [str(v) for v in part[setting]]
        x = np.arange(len(labels))
        ax.bar(x, 100 * part["acc"], color="tab:blue", alpha=0.5, label="ACC")
        ax.plot(x, 100 * part["auc"], color="tab:green", marker="o", label="AUC")
        ax.set_xticks(x, labels, rotation=45, ha="right")
        low = 100 * min(part["acc"].min(), part["auc"].min())
        ax.set(ylim=(max(0, low - 5), 100), title=task, xlabel=setting)
    for ax in axes[:, 0]:
        ax.set_ylabel("%")
    axes[0][0].legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def anchor_tsne(points_before: np.ndarray, points_after: np.ndarray, anchors: np.ndarray,
                silhouettes: tuple[float, float]) -> matplotlib.figure.Figure:
    """Fig. 5: 2-D t-SNE of anchor outputs r^i, coloured by anchor i, untrained vs trained."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    palette = sns.color_palette("tab10", n_colors=int(anchors.max()) + 1)
    for ax, points, name, sil in zip(axes, (points_before, points_after), ("initialised", "trained"), silhouettes):
        sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=anchors, palette=palette, s=12, ax=ax, legend=False)
        ax.set(title=f"{name} SMEN (silhouette of anchors {sil:.2f})", xticks=[], yticks=[])
    fig.suptitle("t-SNE of multi-anchor outputs r^i, colour = anchor i (Fig. 5)")
    return fig


def anchor_label_heatmap(lift: np.ndarray, label_names: Sequence[str], title: str) -> matplotlib.figure.Figure:
    """Fig. 5 companion: lift of each label (category) under each anchor i, (M, L) heatmap.

    lift = the label's share of the anchor's alpha-weighted mass / its share overall
    (``lurm_lite.analysis.top_labels_per_anchor``); 1 = no preference, drawn white.
    """
    lift = np.asarray(lift, dtype=float)
    frame = pd.DataFrame(lift, index=[f"anchor {i}" for i in range(lift.shape[0])], columns=list(label_names))
    fig, ax = plt.subplots(figsize=(min(16, 2 + 0.45 * lift.shape[1]), 0.35 * lift.shape[0] + 1.8))
    high = max(2.0, float(np.nanmax(lift)) if lift.size else 2.0)
    sns.heatmap(frame, cmap="RdBu_r", center=1.0, vmin=0, vmax=high, ax=ax,
                cbar_kws={"label": "lift (1 = no preference)"})
    ax.set(xlabel="", ylabel="", title=title)
    return fig
