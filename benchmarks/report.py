"""report.md from the results a benchmark folder holds (latency.json, quality.json, scaling.json and their
-cuda twins): the machine, every table with the exact command that produced it, the plots, the ratios,
and the published anchors. CPU and GPU results get separate sections and never share a ratio.

    write_report("benchmarks/results")                     # benchmarks/results/report.md
    update_readme("README.md", "benchmarks/results")       # the headline table between the markers
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.anchors import ANCHORS
from benchmarks.common import finite, fmt, fmt_count, write_text_atomic
from runtime.errors import UserError

README_START = "<!-- benchmarks:headline -->"
README_END = "<!-- /benchmarks:headline -->"
STAGE_COLUMNS = ("preprocess", "encode", "vision", "prefill", "decode", "act", "model", "server", "network",
                 "detokenize+safety", "serial")


def load_results(folder: str | Path) -> dict[str, dict]:
    """{"latency": ..., "latency-cuda": ..., "quality": ..., "scaling": ...}: whichever files exist."""
    folder = Path(folder)
    out = {}
    for name in ("latency", "latency-cuda", "quality", "scaling", "scaling-cuda"):
        path = folder / f"{name}.json"
        if path.is_file():
            try:
                out[name] = json.loads(path.read_text())
            except ValueError as err:
                raise UserError(f"{path} is not valid JSON ({err}): run the benchmark again") from None
    return out


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(stats: dict | None, q: str) -> str:
    return fmt((stats or {}).get(f"{q}_ms"))


# -- machine ------------------------------------------------------------------------------------------------
def machine_section(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    m = first["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    lines = ["## Machine", "",
             f"- CPU: {m['cpu']} ({m['machine']}), {m['logical_cpus']} logical CPUs, {m['usable_cpus']} usable",
             "- threads used: 1 per engine (onnxruntime intra-op 1 and inter-op 1, torch 1, onnxruntime-genai 1, "
             "the policy server 1); OMP_WAIT_POLICY=" + str(m.get("omp_wait_policy")),
             f"- OS: {m['os']}; Python {m['python']}",
             f"- libraries: {libs}"]
    for name, result in results.items():
        before, after = result["machine"].get("load_average_before"), result["machine"].get("load_average_after")
        if before:
            busy = " (other work was running: expect noisier figures)" if max(before + (after or [])) > 1.0 else ""
            lines.append(f"- load average during `{name}` (1, 5, 15 min): before {before}, after {after}{busy}")
    return "\n".join(lines)


# -- latency --------------------------------------------------------------------------------------------------
def quality_name(path: dict) -> str:
    """The quality table's name for a latency path: student-int8 -> 'student int8', teacher-cloud-lte ->
    'teacher cloud (lte)'."""
    name = path["key"].replace("-cloud-", " cloud (").replace("-", " ")
    return name + ")" if path["where"] == "cloud" else name


def _success_cell(path: dict, success: dict | None) -> str:
    overall = ((success or {}).get(quality_name(path)) or {}).get("overall")
    return f"{overall['successes']}/{overall['episodes']}" if overall else "-"


def headline_table(latency: dict, success: dict | None = None) -> str:
    """One row per path: size, end-to-end latency, control rate, measured/floor, and (given quality.json's
    `success`) the closed-loop success of the same bundle."""
    rows = []
    for p in latency["paths"]:
        if not p.get("available"):
            row = [p["name"], p["where"], p["precision"], fmt_count(p.get("parameters")),
                   fmt_count(p.get("flops_per_action")), "-", "-", "-", "-", "-", p["note"].split(":")[0]]
        else:
            e2e = p["end_to_end"]
            row = [p["name"], p["where"], p["precision"], fmt_count(p.get("parameters")),
                   fmt_count(p.get("flops_per_action")), _ms(e2e, "p50"), _ms(e2e, "p95"), _ms(e2e, "p99"),
                   _ms(e2e, "max"), f"{fmt(p['rate_hz_p50'], 1)} / {fmt(p['rate_hz_p99'], 1)}",
                   fmt(p.get("measured_over_floor"), 1, "x")]
        rows.append(row + ([_success_cell(p, success)] if success else []))
    header = ["path", "where", "precision", "parameters", "FLOPs/action", "p50 ms", "p95 ms", "p99 ms", "max ms",
              "control rate Hz (p50 / p99)", "measured / floor"] + (["closed-loop success"] if success else [])
    return _table(header, rows, ["---", "---", "---"] + ["---:"] * (len(header) - 3))


def ratio_table(latency: dict) -> str:
    rows = []
    for r in latency["ratios"]:
        if r.get("paired_median") is None:
            continue
        rows.append([r["ratio"], r["metric"].replace("_", "-"), fmt(r["p50_ratio"], 2, "x"), fmt(r.get("p99_ratio"), 2, "x"),
                     f"{fmt(r['paired_median'], 2, 'x')} [{fmt(r['paired_ci95_low'], 2)}, {fmt(r['paired_ci95_high'], 2)}]"])
    return _table(["how many times faster", "on", "at p50", "at p99", "paired median [95% CI]"], rows,
                  ["---", "---", "---:", "---:", "---:"])


def stage_table(latency: dict) -> str:
    rows = [p for p in latency["paths"] if p.get("available")]
    stages = [s for s in STAGE_COLUMNS if any(s in p["stages"] for p in rows)]
    body = [[p["name"]] + [f"{_ms(p['stages'].get(s), 'p50')} / {_ms(p['stages'].get(s), 'p99')}"
                           if s in p["stages"] else "" for s in stages] +
            [f"{_ms(p['end_to_end'], 'p50')} / {_ms(p['end_to_end'], 'p99')}"] for p in rows]
    return _table(["path"] + stages + ["end to end"], body)


def latency_section(latency: dict, suffix: str) -> str:
    floor = latency["compute_floor"]
    serial = latency.get("serial")
    unavailable = [p for p in latency["paths"] if not p.get("available")]
    fallbacks = sum(p.get("fallbacks") or 0 for p in latency["paths"])
    lost = sum(p.get("serial_lost") or 0 for p in latency["paths"])
    parts = [f"## Latency: {latency['device']['label']}", "",
             f"Command: `{latency['command']}` (started {latency.get('started', '?')})", "",
             f"One action from camera frame to the arm controller's ACK, {latency['frames']} timed frames "
             f"({latency['frame_source']}; {latency['prompt_tokens_mean']} instruction tokens on average), "
             f"{latency['warmup_frames']} warm-up frames untimed, every path on the same frames, interleaved per frame. "
             + (f"Serial: {serial['baud']} baud to the controller emulator, {serial['line']}. " if serial else
                "No serial link (--no-serial). ")
             + "Cloud rows: the teacher served by `python -m runtime serve` in another process, through a "
               "`python -m runtime netem-proxy` process per network profile (figures and sources in "
               "runtime/net_profiles.py), on loopback.", "",
             headline_table(latency), "",
             "Control rate: 1 / end-to-end time at p50 and at p99. Measured / floor: the inference p50 over "
             "FLOPs per action / R (below)."]
    cloud = [p for p in latency["paths"] if p.get("available") and p["where"] == "cloud"]
    if cloud:
        parts += ["", f"Each cloud request carries the raw frame: {cloud[0].get('bytes_per_request', '-')} bytes "
                      f"(the profiles' uplink rates apply to it)."]
    if unavailable:
        parts += [""] + [f"- {p['name']}: {p['note']}" for p in unavailable]
    if fallbacks or lost:
        parts += ["", f"Cloud replies that fell back (timeout {latency['config']['cloud_timeout_s']} s): {fallbacks}; "
                      f"serial actions lost: {lost}."]
    parts += ["", "### Ratios", "", ratio_table(latency), "",
              "Above 1: the second-named path is faster. p50 and p99 ratios are of the two distributions; the paired "
              "median is the median over frames of each frame's own ratio, with a bootstrap interval.", "",
              "### Stages (p50 / p99 ms)", "", stage_table(latency), "",
              "preprocess: resize and normalize (cloud rows: on the server); encode: the client packing the frame; "
              "act: the one-call action graph (vision, prefill and every action token); model: PyTorch's whole "
              "generate(); server: the server's own time per request; network: the client's wait minus the server's "
              "time; serial: send to ACK. p95 and max of every stage are in the CSV.", "",
              "### Compute floor", "",
              f"R = {floor['gflops']:.1f} GFLOP/s ({floor['library']}, [{' x '.join(map(str, floor['shape'][:2]))}] @ "
              f"[{' x '.join(map(str, floor['shape'][1:]))}]), re-measured after the run: "
              f"{floor.get('gflops_after_run_quick', float('nan')):.1f} GFLOP/s. Method: {floor['method']}. "
              "FLOPs per action: distill/flops.py, as each path computes them: where the instruction's KV cache is "
              "kept between frames (the runtime, genai-rewind, the policy server) the per-frame prefill counts the "
              "image tokens only; generate() and genai prefill the instruction at every frame, and generate() "
              "computes the whole vocabulary's output rows where the others compute the 256 action rows.", "",
              f"![latency](latency{suffix}.png)", "",
              f"Files: `latency{suffix}.csv` (this table), `latency_stages{suffix}.csv`, `latency_ratios{suffix}.csv`, "
              f"`latency{suffix}.json` (every per-frame time)."]
    return "\n".join(parts)


# -- quality ----------------------------------------------------------------------------------------------------
def quality_section(quality: dict) -> str:
    policies = quality["success"]
    names = list(policies)
    rows = []
    for task in quality["tasks"] + ["overall"]:
        cells = []
        for n in names:
            row = policies[n].get(task)
            cells.append(f"{row['successes']}/{row['episodes']} ({100 * row['success_rate']:.0f}%)" if row else "-")
        rows.append([f"**{task}**" if task == "overall" else task] + cells)
    cfg = quality["config"]
    parts = ["## Quality", "", f"Command: `{quality['command']}` (started {quality.get('started', '?')})", "",
             f"Closed-loop success on unseen seeds ({cfg['seeds']} per task, from {cfg['seed_start']}), at most "
             f"{cfg['max_steps']} steps. Edge rows: the project's evaluator on each bundle (steps as fast as the "
             f"policy decides). Cloud rows: the teacher's fp32 bundle served over each network profile, driven by the "
             f"runtime's control loop at {cfg['rate_hz']:g} Hz with the safety envelope; a reply later than 80% of "
             f"the period is a held step (the `lan` row shows what that harness alone changes).", "",
             _table(["task"] + names, rows, ["---"] + ["---:"] * len(names))]
    cloud = [(n, p["cloud"]) for n, p in policies.items() if p.get("kind") == "cloud"]
    if cloud:
        parts += ["", _table(["cloud profile", "steps", "held (late) steps", "round trip p50 ms", "p95 ms", "timeout ms"],
                             [[n, c["steps"], f"{c['fallback_steps']} ({c['late']})",
                               fmt((c["round_trip_ms"] or {}).get("p50"), 1), fmt((c["round_trip_ms"] or {}).get("p95"), 1),
                               fmt(c["timeout_ms"], 0)] for n, c in cloud])]
    agreement = quality["agreement"]
    parts += ["", f"Token agreement with the student's fp32 bundle on {next(iter(agreement.values()))['frames']} "
                  f"frames ({quality['agreement_frame_source']}), beside what the export measured:", "",
              _table(["bundle", "tokens equal", "frames all equal", "mean bin error", "at export (frames)"],
                     [[k, fmt(100 * v["token_agreement"], 1, "%"), fmt(100 * v["frame_agreement"], 1, "%"),
                       fmt(v["mean_bin_error"], 2),
                       f"{fmt(100 * v['export_token_agreement'], 1, '%') if finite(v.get('export_token_agreement')) else '-'}"
                       f" ({v.get('export_frames') or '-'})"] for k, v in agreement.items()])]
    if quality["questions"]:
        kinds = sorted({k for v in quality["questions"].values() for k in (v.get("by_kind") or {})})
        parts += ["", "Question accuracy (text mode, held-out frames; answers from the recorded simulator state):", "",
                  _table(["bundle", "accuracy", "questions"] + kinds,
                         [[k, fmt(100 * v["accuracy"], 1, "%") if finite(v.get("accuracy")) else (v.get("note") or "-"),
                           v.get("questions", "-")] + [fmt(100 * (v.get("by_kind") or {}).get(kind, float("nan")), 0, "%")
                                                       for kind in kinds] for k, v in quality["questions"].items()])]
    else:
        parts += ["", f"Question accuracy: {quality.get('question_note')}"]
    parts += ["", "![quality](quality.png)", "",
              "Files: `quality_success.csv`, `quality_agreement.csv`, `quality_questions.csv`, `quality.json`."]
    return "\n".join(parts)


# -- scaling -----------------------------------------------------------------------------------------------------
def scaling_section(scaling: dict, suffix: str) -> str:
    rows = [[p["axis"], p["value"], p["image_tokens"], p["prompt_tokens"], f"{p['vision_width']}/{p['text_width']}",
             f"{p['vision_layers']}/{p['text_layers']}", fmt_count(p["parameters"]), fmt_count(p["flops_per_action"]),
             fmt(p["total_p50_ms"]), fmt(p["vision_p50_ms"]), fmt(p["prefill_p50_ms"]), fmt(p["decode_p50_ms"]),
             fmt(p["prompt_prefill_p50_ms"]), fmt(p["floor_ms"], 3), fmt(p["measured_over_floor"], 1, "x")]
            for p in scaling["points"]]
    base = scaling["base"]
    return "\n".join([
        f"## Scaling: {scaling['device']['label']}", "",
        f"Command: `{scaling['command']}` (started {scaling.get('started', '?')})", "",
        f"Random-weight models, one knob at a time from the base ({base['image_size']} px / patch {base['patch_size']}, "
        f"vision {base['vision_width']} wide x {base['vision_layers']} layers, decoder {base['text_width']} wide x "
        f"{base['text_layers']} layers, {scaling['base_prompt_tokens']} instruction tokens), exported to ONNX and "
        f"timed by the runtime in {scaling['decode']}, {scaling['frames']} frames per point, interleaved. "
        f"Instruction prefill: once per episode (fresh prompts). Floor: FLOPs / R, R = "
        f"{scaling['compute_floor']['gflops']:.1f} GFLOP/s measured in the same run.", "",
        _table(["axis", "value", "image tokens", "instruction tokens", "width v/t", "layers v/t", "parameters",
                "FLOPs/action", "per action ms", "vision", "prefill", "decode", "instruction prefill", "floor ms",
                "measured / floor"], rows, ["---"] + ["---:"] * 14), "",
        f"![scaling](scaling{suffix}.png)", "", f"Files: `scaling{suffix}.csv`, `scaling{suffix}.json`."])


# -- anchors -----------------------------------------------------------------------------------------------------
def anchors_section(results: dict[str, dict]) -> str:
    rows = [[a.system, a.figure, a.per_action_ms, a.hardware, "published"]
            for a in ANCHORS]
    success = (results.get("quality") or {}).get("success", {})
    for name in ("latency", "latency-cuda"):
        latency = results.get(name)
        if not latency:
            continue
        hardware = latency["device"]["label"]
        for p in latency["paths"]:
            if p.get("available") and (p["key"] in ("student-int8", "student-fp32", "teacher-fp32")
                                       or p["where"] == "cloud"):
                e2e = p["end_to_end"]
                overall = (success.get(quality_name(p)) or {}).get("overall")
                won = (f"; success {100 * overall['success_rate']:.0f}% of {overall['episodes']} episodes"
                       if overall else "")
                rows.append([f"vla-edge {p['name']}", f"{fmt(e2e['p50_ms'], 1)} ms p50 ({fmt(p['rate_hz_p50'], 1)} Hz), "
                             f"{fmt(e2e['p99_ms'], 1)} ms p99; {fmt_count(p['parameters'])} parameters{won}",
                             fmt(e2e["p50_ms"], 1), hardware + (" + emulated network" if p["where"] == "cloud" else ""),
                             "this report"])
    return "\n".join([
        "## Anchors", "",
        "Published figures (DESIGN.md section 6) beside ours, with the hardware each was measured on. They are other "
        "models (billions of parameters against our millions) on other machines: they show where our figures sit, "
        "not which system is better. Ours are frame-to-ACK end to end; the published ones are per action or per "
        "step as their authors define it.", "",
        _table(["system", "figure", "ms per action", "hardware", "source"], rows, ["---", "---", "---:", "---", "---"])])


# -- the report ---------------------------------------------------------------------------------------------------
def build_report(results: dict[str, dict]) -> str:
    if not results:
        raise UserError("no benchmark results to report: run `python -m benchmarks all --student models/student "
                        "--teacher models/teacher` (or latency, quality, scaling) first")
    suites = sorted({r.get("suite_command") for r in results.values() if r.get("suite_command")})
    parts = ["# vla-edge benchmark report", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m benchmarks report`. "
             + (f"Everything here was produced by `{suites[0]}`." if len(suites) == 1 else
                "Each table names the command that produced it."), "",
             machine_section(results)]
    if "latency" in results:
        parts += ["", latency_section(results["latency"], "")]
    if "quality" in results:
        parts += ["", quality_section(results["quality"])]
    if "scaling" in results:
        parts += ["", scaling_section(results["scaling"], "")]
    if "latency-cuda" in results or "scaling-cuda" in results:
        parts += ["", "# GPU results", "",
                  "Measured with --device cuda (CUDA execution provider, PyTorch on CUDA). Their ratios are between GPU "
                  "figures only; nothing here is divided by a CPU figure."]
        if "latency-cuda" in results:
            parts += ["", latency_section(results["latency-cuda"], "-cuda")]
        if "scaling-cuda" in results:
            parts += ["", scaling_section(results["scaling-cuda"], "-cuda")]
    parts += ["", anchors_section(results), ""]
    return "\n".join(parts)


def write_report(folder: str | Path) -> Path:
    folder = Path(folder)
    return write_text_atomic(folder / "report.md", build_report(load_results(folder)))


def readme_block(folder: str | Path, link: str) -> str:
    results = load_results(folder)
    latency = results.get("latency")
    if latency is None:
        raise UserError(f"{folder} has no latency.json: run `python -m benchmarks latency` (or `all`) first")
    quality = results.get("quality")
    measured = [r for r in latency["ratios"] if r.get("paired_median") is not None]
    cloud = [r for r in measured if "cloud teacher" in r["ratio"]]
    runtime = [r for r in measured if r["ratio"].startswith("runtime")]
    lines = [README_START, "",
             f"{latency['device']['label']}; {latency['frames']} frames; from `{latency.get('suite_command') or latency['command']}` "
             f"(full report: [{link}]({link})).", "", headline_table(latency, quality and quality["success"])]
    if quality:
        cfg = quality["config"]
        lines += ["", f"Closed-loop success: {cfg['seeds']} unseen seeds per task on {len(quality['tasks'])} tasks; "
                      f"the cloud rows at {cfg['rate_hz']:g} Hz, where a reply later than 80% of the period holds "
                      f"position."]
    if cloud:
        lines += ["", "Edge student int8 against the cloud teacher, end to end: "
                  + "; ".join(f"{r['ratio'].split('(')[-1].rstrip(')')} {fmt(r['p50_ratio'], 1)}x at p50, "
                              f"{fmt(r['p99_ratio'], 1)}x at p99" for r in cloud) + "."]
    if runtime:
        lines += ["", "Inference, paired per frame: " + "; ".join(
            f"{r['ratio']} {fmt(r['paired_median'], 2)}x [{fmt(r['paired_ci95_low'], 2)}, "
            f"{fmt(r['paired_ci95_high'], 2)}]" for r in runtime) + "."]
    return "\n".join(lines + ["", README_END])


def update_readme(readme: str | Path, folder: str | Path) -> Path:
    """Replace the text between the headline markers of `readme` with the headline of `folder`'s results."""
    readme = Path(readme)
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise UserError(f"{readme} has no '{README_START}' ... '{README_END}' markers: add them where the headline "
                        f"table goes")
    link = str(Path(folder) / "report.md")
    try:
        link = str((Path(folder) / "report.md").resolve().relative_to(readme.resolve().parent))
    except ValueError:
        pass
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    return write_text_atomic(readme, head + readme_block(folder, link) + tail)
