"""The report's PNG plots (matplotlib, Agg backend: no display needed), each written atomically.

    plot_latency(result, "benchmarks/results/latency.png")    # end-to-end distributions, stage breakdown
    plot_quality(result, "benchmarks/results/quality.png")    # success per policy and precision
    plot_scaling(result, "benchmarks/results/scaling.png")    # latency against each size knob
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import atomic_png

# Stage colours of the stacked breakdown (p50 of each stage; a cloud row shows the server's model stages).
BREAKDOWN = (("preprocess", "#8dd3c7"), ("encode", "#bebada"), ("vision", "#80b1d3"), ("prefill", "#fdb462"),
             ("decode", "#b3de69"), ("act", "#fb8072"), ("model", "#fccde5"), ("network", "#bc80bd"),
             ("detokenize+safety", "#ffed6f"), ("serial", "#d9d9d9"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path) -> Path:
    with atomic_png(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return Path(path)


def plot_latency(result: dict, path: str | Path) -> Path:
    """Left: the end-to-end distribution per path (box 25-75%, whiskers p1-p99, log scale); right: the
    p50 of each stage stacked."""
    plt = _pyplot()
    rows = [p for p in result["paths"] if p.get("available")]
    names = [p["name"] for p in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 2.2), sharey=True)
    data = [np.asarray([t for t in p["times_ms"]["end_to_end"] if np.isfinite(t)]) for p in rows]
    left.boxplot(data, vert=False, whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    left.set_xscale("log")
    left.set_yticks(range(1, len(rows) + 1), names)
    left.invert_yaxis()
    left.set_xlabel("end-to-end ms per action (log scale)")
    left.set_title("latency distribution (box: p25-p75, whiskers: p1-p99)")
    left.grid(axis="x", which="both", alpha=0.3)
    for y, p in enumerate(rows, start=1):
        left.annotate(f"p50 {p['end_to_end']['p50_ms']:.1f}", (p["end_to_end"]["p50_ms"], y),
                      xytext=(0, 9), textcoords="offset points", fontsize=7, ha="center")
    starts = np.zeros(len(rows))
    for stage, colour in BREAKDOWN:
        widths = np.array([(p["stages"].get(stage) or {}).get("p50_ms") or 0.0 for p in rows])
        if widths.any():
            right.barh(range(1, len(rows) + 1), widths, left=starts, color=colour, label=stage, edgecolor="white")
            starts += widths
    right.set_xlabel("ms (p50 of each stage, stacked)")
    right.set_title("where the time goes")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    right.grid(axis="x", alpha=0.3)
    figure.suptitle(f"one action, frame to ACK: {result['device']['label']}; {result['frames']} frames", fontsize=10)
    return _save(figure, path)


def plot_quality(result: dict, path: str | Path) -> Path:
    """Left: overall closed-loop success per policy; right: token agreement with fp32 and question
    accuracy per precision."""
    plt = _pyplot()
    policies = result["success"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(policies)
    rates = [100 * (policies[n]["overall"]["success_rate"] or 0.0) for n in names]
    colours = ["#fb8072" if policies[n]["kind"] == "cloud" else "#80b1d3" for n in names]
    left.bar(range(len(names)), rates, color=colours)
    left.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    left.set_ylabel("closed-loop success, %")
    left.set_ylim(0, 105)
    left.set_title(f"success over {result['config']['seeds']} seeds x {len(result['tasks'])} tasks "
                   "(red: cloud teacher per profile)", fontsize=9)
    for x, rate in enumerate(rates):
        left.annotate(f"{rate:.0f}", (x, rate), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    bundles = list(result["agreement"])
    x = np.arange(len(bundles))
    agreement = [100 * (result["agreement"][b].get("token_agreement") or 0.0) for b in bundles]
    questions = [100 * ((result["questions"].get(b) or {}).get("accuracy") or 0.0) for b in bundles]
    right.bar(x - 0.2, agreement, 0.4, label="token agreement with fp32", color="#b3de69")
    right.bar(x + 0.2, questions, 0.4, label="question accuracy", color="#bebada")
    right.set_xticks(x, bundles, rotation=20, ha="right", fontsize=8)
    right.set_ylim(0, 105)
    right.set_ylabel("%")
    right.set_title("per precision", fontsize=9)
    right.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def plot_scaling(result: dict, path: str | Path) -> Path:
    """One panel per knob: per-action latency (p50, with its stages) and the compute floor."""
    plt = _pyplot()
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axes_names = list(result["axes"])
    columns = min(2, len(axes_names))
    rows = (len(axes_names) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False)
    for ax, axis in zip(axes.flat, axes_names):
        points = [p for p in result["points"] if p["axis"] == axis]
        xs = [p["value"] for p in points]
        ax.plot(xs, [p["total_p50_ms"] for p in points], "o-", color="black", label="per action (p50)")
        for stage, colour, label in (("vision", "#80b1d3", "vision"), ("prefill", "#fdb462", "image prefill"),
                                     ("decode", "#b3de69", "decode"),
                                     ("prompt_prefill", "#bc80bd", "instruction prefill (once per episode)")):
            values = [p.get(f"{stage}_p50_ms") for p in points]
            if any(v is not None for v in values):
                ax.plot(xs, [v if v is not None else np.nan for v in values], ".--", color=colour, label=label)
        ax.plot(xs, [p["floor_ms"] for p in points], ":", color="grey", label="compute floor")
        ax.set_xlabel(result["axes"][axis])
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.set_title(axis, fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(axes_names):]:
        ax.set_visible(False)
    figure.suptitle(f"cost curve, random-weight models, runtime token loop: {result['device']['label']}", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)
