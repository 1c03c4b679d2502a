"""How `rayrec eval` shows its results: a table for people, a PNG of HR@10 over replay time."""

from __future__ import annotations

from typing import Any

METRICS = ("hr@10", "hr@20", "ndcg@10", "mrr@10", "coverage@10")


def table(result: dict[str, Any]) -> str:
    """A Markdown table: one row per policy, each metric with its 95% interval."""
    lines = ["| policy | " + " | ".join(METRICS) + " | scored events |", "|---" * (len(METRICS) + 2) + "|"]
    for name, m in result["metrics"].items():
        cells = [f"{m[k]['value']:.4f} [{m[k]['ci95'][0]:.4f}, {m[k]['ci95'][1]:.4f}]" for k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['events']} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    """Writes a PNG of HR@10 per slice of the replay's time span, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for name, curve in result["hr@10_over_time"].items():
        xs = [i + 1 for i, v in enumerate(curve) if v is not None]
        ax.plot(xs, [curve[i - 1] for i in xs], marker="o", markersize=3, label=name)
    params = result["params"]
    slices = len(next(iter(result["hr@10_over_time"].values())))
    ax.set_xlabel(f"replay time: {slices} equal slices of the replayed span")
    ax.set_xticks(range(1, slices + 1))
    ax.set_ylabel("HR@10")
    ax.set_title(f"HR@10 over the replayed {params['replayed_events']} events")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
