"""Is a bundle's ONNX ready for TensorRT? A static check with the `onnx` package alone (no GPU, no TensorRT).

For every graph of the bundle (or any .onnx file): the opset against the range TensorRT's parser reads,
every operator (subgraphs and local functions included) against the support matrix in `export/trt_ops.py`,
operators from other domains (they would need plugins), quantization nodes TensorRT cannot take (nonzero
zero points, uint8), inputs the parser wants as constants, data-dependent shapes and control flow, int64
inputs, and the symbolic dimensions an optimization profile must cover.

    findings = check_bundle("bundles/student-fp32")
    print(format_table(findings)); sys.exit(1 if unsupported(findings) else 0)

`python -m export trt-check BUNDLE` prints the table and exits 1 when anything is unsupported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from export import trt_ops

OK, NOTE, WARN, UNSUPPORTED = "ok", "note", "warn", "UNSUPPORTED"
_INT64, _DOUBLE, _UINT8 = 7, 11, 2  # onnx.TensorProto element types


@dataclass
class Finding:
    """One row of the report: what was checked in which graph, how often, and the verdict."""

    graph: str
    item: str  # an operator type, "opset", "input NAME", ...
    status: str  # ok | note | warn | UNSUPPORTED
    detail: str = ""
    count: int = 1


def _walk(graph):
    """Every node of `graph` and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _walk(sub)


def _constants(model) -> dict[str, object]:
    """Tensor name -> TensorProto for initializers and Constant node outputs (build-time constants)."""
    found = {t.name: t for t in model.graph.initializer}
    for node in _walk(model.graph):
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            found[node.output[0]] = value
    return found


def _opset_findings(name: str, model) -> list[Finding]:
    low, high = trt_ops.OPSET_RANGE
    out = []
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            version = entry.version
            if not low <= version <= high:
                out.append(Finding(name, "opset", UNSUPPORTED, f"ai.onnx {version}: {trt_ops.BASELINE} parses {low}-{high}; "
                                   f"export with opset {high} or lower (export/graphs.py OPSET)"))
            elif version > trt_ops.OLD_TRT_MAX_OPSET:
                out.append(Finding(name, "opset", WARN, f"ai.onnx {version}: fine for TensorRT 10; TensorRT 8.5/8.6 "
                                   f"(JetPack 5, JetPack 6.0) read up to {trt_ops.OLD_TRT_MAX_OPSET}"))
            else:
                out.append(Finding(name, "opset", OK, f"ai.onnx {version}"))
    return out


def _node_problem(node, constants: dict) -> tuple[str, str] | None:
    """(status, detail) for a node whose use of a supported operator TensorRT restricts, else None."""
    import numpy as np
    from onnx import numpy_helper

    if node.op_type in trt_ops.QDQ_OPS:
        zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is not None and zero.data_type == _UINT8:
            return UNSUPPORTED, "uint8 quantization: TensorRT takes int8 with zero point 0 (symmetric)"
        if zero is not None and np.any(numpy_helper.to_array(zero) != 0):
            return UNSUPPORTED, "nonzero zero point: TensorRT needs symmetric int8 (zero point 0)"
    index = trt_ops.CONSTANT_INPUTS.get(node.op_type)
    if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
        return WARN, f"input {index} is computed at run time; TensorRT wants a build-time constant"
    return None


def _op_findings(name: str, model) -> list[Finding]:
    constants = _constants(model)
    nodes = list(_walk(model.graph))
    for function in model.functions:  # local functions: TensorRT 10 inlines them
        nodes += list(function.node)
    counts = Counter((n.domain or "ai.onnx", n.op_type) for n in nodes)
    problems: dict[tuple, list] = {}
    for node in nodes:
        problem = _node_problem(node, constants)
        if problem:
            problems.setdefault((node.domain or "ai.onnx", node.op_type), []).append(problem)
    out = []
    for (domain, op), count in sorted(counts.items(), key=lambda kv: kv[0][1]):
        if domain not in ("ai.onnx", ""):
            out.append(Finding(name, f"{domain}.{op}", UNSUPPORTED, "non-standard domain: TensorRT would need a plugin", count))
        elif op in trt_ops.UNSUPPORTED:
            out.append(Finding(name, op, UNSUPPORTED, trt_ops.UNSUPPORTED[op], count))
        elif op not in trt_ops.SUPPORTED:
            out.append(Finding(name, op, UNSUPPORTED, f"not in the {trt_ops.BASELINE} support matrix", count))
        elif (domain, op) in problems:
            worst = max(problems[(domain, op)], key=lambda p: p[0] == UNSUPPORTED)
            out.append(Finding(name, op, worst[0], f"{len(problems[(domain, op)])} node(s): {worst[1]}", count))
        elif op in trt_ops.DATA_DEPENDENT:
            out.append(Finding(name, op, WARN, trt_ops.DATA_DEPENDENT[op], count))
        elif op in trt_ops.SINCE:
            out.append(Finding(name, op, NOTE, f"needs TensorRT >= {trt_ops.SINCE[op]}", count))
        else:
            out.append(Finding(name, op, OK, "", count))
    return out


def _input_findings(name: str, model) -> list[Finding]:
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
        symbolic = [str(d) for d in dims if isinstance(d, str)]
        notes = []
        if tensor.elem_type == _INT64:
            notes.append("int64: TensorRT 10 takes it as is, 8.x casts to int32 (the runtime feeds the engine's dtype)")
        if tensor.elem_type == _DOUBLE:
            notes.append("float64: TensorRT casts to float32")
        if symbolic:
            notes.append(f"symbolic {', '.join(symbolic)}: covered by the optimization profiles")
        out.append(Finding(name, f"input {value.name}", NOTE if notes else OK,
                           f"[{', '.join(map(str, dims))}] " + "; ".join(notes)))
    return out


def check_model(model, name: str) -> list[Finding]:
    """All findings for one loaded onnx.ModelProto."""
    return _opset_findings(name, model) + _op_findings(name, model) + _input_findings(name, model)


def check_file(path: str | Path, name: str | None = None) -> list[Finding]:
    import onnx

    return check_model(onnx.load(str(path), load_external_data=False), name or Path(path).stem)


def check_bundle(root: str | Path) -> list[Finding]:
    """Findings for every graph a bundle's manifest lists (loading the bundle checks its sha256 first);
    a plain .onnx file is checked on its own."""
    root = Path(root)
    if root.is_file():
        return check_file(root)
    from runtime.bundle import Bundle

    bundle = Bundle.load(root)
    findings = []
    for name, graph in bundle.manifest["graphs"].items():
        findings += check_file(bundle.path(graph["file"]), name)
    return findings


def unsupported(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == UNSUPPORTED]


def format_table(findings: list[Finding], verbose: bool = False) -> str:
    """A fixed-width table; without `verbose`, supported operators are folded into one row per graph."""
    rows = [("graph", "item", "count", "status", "detail")]
    for graph in dict.fromkeys(f.graph for f in findings):
        mine = [f for f in findings if f.graph == graph]
        plain = [f for f in mine if f.status == OK and not f.item.startswith(("input ", "opset"))]
        for f in mine:
            if verbose or f not in plain:
                rows.append((f.graph, f.item, str(f.count), f.status, f.detail))
        if plain and not verbose:
            rows.append((graph, f"{len(plain)} more op types", str(sum(f.count for f in plain)), OK,
                         " ".join(f.item for f in plain)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)
