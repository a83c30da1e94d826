"""PNG plots of a comparison summary (matplotlib's Agg canvas; no display, no global backend change).

- gold (and judge) per method, mean +- standard error;
- gold against strong-model samples per prompt (the budget): a line for BoN (n in the
  records, e.g. 1, 4, 16) and one for each CBS chunk length L, so methods of equal
  budget sit at the same x. ``base`` is BoN(1) (the same computation), so it is drawn as
  the budget-1 point of the BoN line when no ``bon:n=1`` was run; EFT (budget 1) is a marker;
- gold against total FLOPs per prompt (every model, guides included): the same lines, each point where its
  method's compute is, so methods compare at matched compute.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import parse_method
from ..extras import require

__all__ = ["plot_gold_by_method", "plot_gold_vs_samples", "plot_gold_vs_flops"]

logger = logging.getLogger(__name__)

_COLORS = {"base": "#7f7f7f", "eft": "#9467bd", "bon": "#1f77b4", "cbs": "#d62728"}
_CBS_COLORS = ["#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22"]


def _figure(width: float, height: float, ncols: int = 1):
    try:
        require("matplotlib", "world")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("plots need matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _err(se):
    return 0.0 if se is None else se


def plot_gold_by_method(summary, path) -> Path:
    """Bars of mean gold reward and mean judge score per method, with standard-error bars."""
    rows = summary.rows
    fig, (ax_gold, ax_judge) = _figure(max(6.0, 1.3 * len(rows) + 3), 4.2, ncols=2)
    xs = list(range(len(rows)))
    colors = [_COLORS.get(r.family, "#2ca02c") for r in rows]
    labels = [r.method for r in rows]
    for ax, means, ses, title in (
        (ax_gold, [r.gold_mean for r in rows], [_err(r.gold_se) for r in rows], "gold reward"),
        (ax_judge, [r.judge_mean for r in rows], [_err(r.judge_se) for r in rows], "independent judge"),
    ):
        ax.bar(xs, means, yerr=ses, color=colors, capsize=4, edgecolor="black", linewidth=0.5)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_title(f"{title} (mean ± s.e.)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    n = max((r.n for r in rows), default=0)
    fig.suptitle(f"{summary.world}: {n} prompt x seed pairs per method", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _series(rows) -> dict:
    """{label: [(budget, row), ...]} for the samples plot."""
    series: dict = {}
    base = next((r for r in rows if r.family == "base"), None)
    for r in rows:
        if r.family == "bon":
            series.setdefault("BoN", []).append((r.budget, r))
        elif r.family == "cbs":
            l = parse_method(r.method).l  # noqa: E741
            series.setdefault(f"CBS (L={'inf' if l is None else l})", []).append((r.budget, r))
    if base is not None:
        for label, points in series.items():
            if not any(b == 1 for b, _ in points):
                points.append((1, base))
    return {k: sorted(v, key=lambda p: (p[0], p[1].method)) for k, v in series.items()}


def plot_gold_vs_samples(summary, path) -> Path:
    """Gold reward against strong-model samples per prompt (log2 x axis), one line per search family."""
    rows = summary.rows
    fig, (ax,) = _figure(6.4, 4.4)
    budgets = sorted({r.budget for r in rows})
    cbs_colors = iter(_CBS_COLORS * 4)
    for label, points in _series(rows).items():
        color = _COLORS["bon"] if label == "BoN" else next(cbs_colors)
        xs = [b for b, _ in points]
        ys = [r.gold_mean for _, r in points]
        ax.errorbar(xs, ys, yerr=[_err(r.gold_se) for _, r in points], marker="o", capsize=4, label=label, color=color)
        if label != "BoN":
            for b, r in points:
                if r.family == "cbs":
                    ax.annotate(
                        r.method.split(":", 1)[1],
                        (b, r.gold_mean),
                        textcoords="offset points",
                        xytext=(4, -10),
                        fontsize=7,
                    )
    for r in rows:
        if r.family in ("base", "eft"):
            ax.errorbar(
                [r.budget],
                [r.gold_mean],
                yerr=[_err(r.gold_se)],
                marker="s" if r.family == "base" else "D",
                linestyle="none",
                capsize=4,
                color=_COLORS[r.family],
                label=r.method,
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("strong-model samples per prompt (budget)")
    ax.set_ylabel("gold reward (mean ± s.e.)")
    ax.set_title(f"{summary.world}: gold reward vs compute", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def plot_gold_vs_flops(summary, path) -> Path:
    """Gold reward against total FLOPs per prompt (every model, guides included; log x axis), one line per
    search family (BoN with base as its first point, CBS per chunk length L), EFT and base as markers."""
    rows = [r for r in summary.rows if r.flops is not None]
    fig, (ax,) = _figure(6.4, 4.4)
    cbs_colors = iter(_CBS_COLORS * 4)
    for label, points in _series(rows).items():
        color = _COLORS["bon"] if label == "BoN" else next(cbs_colors)
        points = sorted(points, key=lambda p: p[1].flops)
        ax.errorbar(
            [r.flops / 1e9 for _, r in points],
            [r.gold_mean for _, r in points],
            yerr=[_err(r.gold_se) for _, r in points],
            marker="o",
            capsize=4,
            label=label,
            color=color,
        )
        for _, r in points:
            if r.family != "base":
                ax.annotate(
                    r.method, (r.flops / 1e9, r.gold_mean), textcoords="offset points", xytext=(4, -10), fontsize=7
                )
    for r in rows:
        if r.family in ("base", "eft"):
            ax.errorbar(
                [r.flops / 1e9],
                [r.gold_mean],
                yerr=[_err(r.gold_se)],
                linestyle="none",
                capsize=4,
                marker="s" if r.family == "base" else "D",
                color=_COLORS[r.family],
                label=r.method,
            )
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if f"{x:.0e}"[0] in "25" else ""))
    ax.set_xlabel("GFLOP per prompt (strong model and guides)")
    ax.set_ylabel("gold reward (mean ± s.e.)")
    ax.set_title(f"{summary.world}: gold reward vs FLOPs", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
