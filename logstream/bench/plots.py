"""PNG plots of the bandwidth results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GOALS = ((10.0, "goal: lz4 ≥ 10x"), (50.0, "goal: sampled ≥ 50x"))


def bandwidth_plots(summary: dict[str, Any], out: Path) -> list[Path]:
    """bytes_per_sec.png, kept_share.png and ratio.png in ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: list[dict[str, Any]] = summary["policies"]
    paths = []

    # Broker bytes/s over the run, one panel per policy (each on its own scale), cap dashed.
    fig, axes = plt.subplots(
        len(results), 1, figsize=(9, 1.9 * len(results) + 0.8), sharex=True, squeeze=False
    )
    for ax, result in zip(axes[:, 0], results, strict=True):
        points = result["per_second"]
        ax.plot([p[0] for p in points], [p[1] / 1000 for p in points], marker=".", color="tab:blue")
        cap = result["cap_bytes_per_sec"]
        if cap:
            ax.axhline(cap / 1000, color="tab:red", linestyle="--", label=f"cap {cap:,.0f} B/s")
            ax.axhline(cap * 1.02 / 1000, color="tab:red", linestyle=":", linewidth=0.8)
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylabel("kB/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{result['policy']}: {result['description']}", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("second of the run")
    fig.suptitle(
        "MQTT wire bytes per second (PUBLISH packets as received; cap dashed, +2 % dotted)",
        fontsize=10,
    )
    fig.tight_layout()
    paths.append(_save(fig, out / "bytes_per_sec.png"))

    # Share of each severity kept, grouped by severity, one bar per policy.
    levels: list[str] = []
    for result in results:
        levels += [name for name in result["offered_per_level"] if name not in levels]
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(levels) + 2), 4.2))
    width = 0.8 / len(results)
    for index, result in enumerate(results):
        shares = result["kept_share_per_level"]
        xs = [n + (index - (len(results) - 1) / 2) * width for n in range(len(levels))]
        ax.bar(xs, [shares.get(name, 0) * 100 for name in levels], width, label=result["policy"])
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylabel("% of offered events delivered")
    ax.set_ylim(0, 105)
    ax.set_title("Events kept per severity")
    ax.legend(
        fontsize=8,
        ncols=min(len(results), 6),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
        frameon=False,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, out / "kept_share.png"))

    # How many times fewer broker bytes per event than the baseline.
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(results) + 2), 4.2))
    names = [r["policy"] for r in results]
    values = [r["times_fewer_than_baseline"] or 0.0 for r in results]
    bars = ax.bar(names, values, color="tab:green")
    ax.bar_label(bars, labels=[f"{v:.1f}x" for v in values], fontsize=8)
    for value, label in GOALS:
        ax.axhline(value, color="grey", linestyle="--", linewidth=0.8)
        ax.text(-0.45, value, label, ha="left", va="bottom", fontsize=8, color="grey")
    ax.set_yscale("log")
    ax.set_ylabel("x fewer broker bytes/event than baseline (log)")
    ax.set_title("Broker bytes per event, relative to one JSON message per event")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    paths.append(_save(fig, out / "ratio.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
