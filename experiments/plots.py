"""PNG figures of runs: test top-1 and training loss per epoch (several runs in one figure, the trials of one
configuration as their mean and a +- sd band), and a table's numbers against the paper's.

matplotlib is imported when a figure is drawn (Agg backend: no display needed).
"""
from __future__ import annotations

import os
import re
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from .runs import SELECTION_TEXT, epoch_rows
from .summary import Summary
from .table import paper_number

# a run folder's trial suffix: RepDistiller's student names end in _<trial>, teacher names in _trial_<trial>;
# --trials N counts 1, 2, ... or base, base_1, base_2, ...
_TRIAL_SUFFIX = re.compile(r"_\d+$")


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def configuration_name(run_dir: str) -> str:
    """The name shared by the trials of one configuration: the folder name without its trial number."""
    name = os.path.basename(os.path.normpath(run_dir))
    if re.search(r"_trial_\d+$", name):
        return re.sub(r"_trial_\d+$", "", name)
    return _TRIAL_SUFFIX.sub("", name)


def group_runs(run_dirs: Sequence[str], separate: bool = False) -> Dict[str, List[str]]:
    """Run folders by configuration (``separate``: every run on its own), in the order given."""
    groups: Dict[str, List[str]] = {}
    for d in run_dirs:
        key = os.path.basename(os.path.normpath(d)) if separate else configuration_name(d)
        groups.setdefault(key, []).append(d)
    return groups


def curves(run_dirs: Sequence[str], key: str) -> Tuple[List[int], List[float], List[float]]:
    """Epochs, mean and sample sd over the runs of ``key`` per epoch (epochs that every run reached)."""
    per_run = []
    for d in run_dirs:
        per_run.append({int(r["epoch"]): float(r[key]) for r in epoch_rows(d) if key in r})
    common = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    means, sds = [], []
    for e in common:
        values = [p[e] for p in per_run]
        means.append(statistics.fmean(values))
        sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return common, means, sds


def plot_runs(run_dirs: Sequence[str], out_path: str, separate: bool = False, labels: Optional[Sequence[str]] = None,
              title: Optional[str] = None) -> str:
    """Test top-1 and training loss per epoch of ``run_dirs`` into one PNG; returns its path."""
    groups = group_runs(run_dirs, separate)
    empty = [d for d in run_dirs if not epoch_rows(d)]
    if empty:
        raise FileNotFoundError(f"'{empty[0]}' holds no epoch rows (metrics.jsonl); give run folders of this toolkit")
    plt = pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(labels) if labels else list(groups)
    for name, dirs in zip(names, groups.values()):
        for ax, key in ((ax_acc, "test_acc"), (ax_loss, "train_loss")):
            epochs, mean, sd = curves(dirs, key)
            if not epochs:
                continue
            text = name + (f" ({len(dirs)} runs)" if len(dirs) > 1 else "")
            line, = ax.plot(epochs, mean, label=text)
            if len(dirs) > 1:
                ax.fill_between(epochs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                color=line.get_color(), alpha=0.2, linewidth=0)
    ax_acc.set(xlabel="epoch", ylabel="test top-1 (%)", title="test top-1 (mean ± sd over trials)")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_acc.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_against_paper(summaries: Sequence[Summary], out_path: str) -> Optional[str]:
    """Ours (mean +- sd) against the paper's number, one point per cell and one panel per selection; None when no
    cell has both."""
    panels = []
    for s in summaries:
        points = []
        for row in s.table.rows:
            for c in s.table.columns:
                e = s.entry(row, c)
                paper = paper_number(e.paper)
                if paper is not None and e.mean is not None:
                    points.append((row.label, paper, e.mean, e.sd or 0.0))
        if points:
            panels.append((s, points))
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    for ax, (s, points) in zip(axes[0], panels):
        labels = list(dict.fromkeys(p[0] for p in points))
        for label in labels:
            mine = [p for p in points if p[0] == label]
            ax.errorbar([p[1] for p in mine], [p[2] for p in mine], yerr=[p[3] for p in mine], fmt="o",
                        markersize=4, capsize=2, label=label)
        lo = min(min(p[1], p[2] - p[3]) for p in points) - 0.5
        hi = max(max(p[1], p[2] + p[3]) for p in points) + 0.5
        ax.plot([lo, hi], [lo, hi], color="gray", linewidth=0.8, linestyle="--")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="paper top-1 (%)", ylabel="ours top-1 (%), mean ± sd",
               title=f"{s.table.name}: {SELECTION_TEXT[s.selection]}")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
