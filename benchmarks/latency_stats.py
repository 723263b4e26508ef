"""Latency statistics for side-by-side benchmarks: percentiles, speed-up ratios with paired bootstrap
intervals, and the markdown table.

    summary = latency_summary(times_s)                      # {"median_ms": ..., "p95_ms": ..., "p99_ms": ...}
    speedup(baseline_s, candidate_s, np.random.default_rng(0))
    # {"median_ratio": 6.1, "paired_median": 6.0, "paired_ci95": [5.8, 6.3]}: how many times faster
"""

from __future__ import annotations

import numpy as np

CI_LEVEL = 0.95


def latency_summary(times_s: np.ndarray) -> dict:
    """Median, p95, p99, mean and min of per-action times (seconds in, milliseconds out)."""
    ms = np.asarray(times_s, np.float64) * 1e3  # (F,)
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min())}


def speedup(baseline_s: np.ndarray, candidate_s: np.ndarray, rng: np.random.Generator, reps: int = 2000) -> dict:
    """How many times faster `candidate` is than `baseline`, timed on the same frames (paired).

    median_ratio: median(baseline) / median(candidate).
    paired_median: the median over frames of baseline_i / candidate_i (each frame's own ratio, so that
    machine noise that hits both runs of a frame cancels), with a percentile-bootstrap interval over frames.
    """
    base, cand = np.asarray(baseline_s, np.float64), np.asarray(candidate_s, np.float64)  # (F,), (F,)
    ratios = base / cand  # (F,)
    picks = rng.integers(0, len(ratios), (reps, len(ratios)))  # (reps, F) frames drawn with replacement
    medians = np.median(ratios[picks], axis=1)  # (reps,)
    tail = 100 * (1 - CI_LEVEL) / 2
    return {"median_ratio": float(np.median(base) / np.median(cand)), "paired_median": float(np.median(ratios)),
            "paired_ci95": [float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))]}


def _ratio_cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    low, high = entry["paired_ci95"]
    return f"{entry['median_ratio']:.2f}x ({entry['paired_median']:.2f}x [{low:.2f}, {high:.2f}])"


def markdown_table(paths: dict[str, dict], genai_name: str | None) -> str:
    """One row per path: latency percentiles, token agreement with the reference, speed-up ratios."""
    genai_header = f"x vs {genai_name}" if genai_name else "x vs genai"
    lines = [f"| path | precision | median ms | p95 ms | p99 ms | agreement | x vs generate() | {genai_header} |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in paths.items():
        lines.append(f"| {name} | {row['precision']} | {row['median_ms']:.2f} | {row['p95_ms']:.2f} | {row['p99_ms']:.2f} "
                     f"| {row['agreement']:.3f} | {_ratio_cell(row.get('vs_generate'))} | {_ratio_cell(row.get('vs_genai'))} |")
    lines.append("")
    lines.append("Ratios: median(baseline) / median(path), then in brackets the median of per-frame paired ratios "
                 f"with its {CI_LEVEL:.0%} bootstrap interval; above 1 means the path is faster.")
    return "\n".join(lines)
