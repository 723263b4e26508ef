"""`python -m export`: checkpoint to a verified, self-describing bundle.

Examples:

    python -m export models/student --out bundles/student-fp32 --dataset data/demos
    python -m export verify bundles/student-fp32 --dataset data/demos
    python -m export doctor
    python -m export trt-check bundles/student-fp32
    python -m export tensorrt bundles/student-fp32 --precision fp16
"""

from __future__ import annotations

import importlib
import sys

from runtime.cli import CommandLine

# Packages the export path uses, and what each is for; TensorRT is optional (NVIDIA machines only).
TOOLCHAIN = (
    ("torch", "PyTorch reference model", "pip install torch==2.13.0"),
    ("transformers", "model building blocks", "pip install '.[train]'"),
    ("onnxruntime", "ONNX sessions and quantization", "pip install ."),
    ("onnx", "ONNX graphs", "pip install '.[train]'"),
    ("onnxscript", "torch.onnx's exporter", "pip install '.[train]'"),
    ("tensorrt", "TensorRT engines (optional)", "comes with JetPack on a Jetson; NVIDIA's index elsewhere"),
)


def cmd_doctor(args) -> int:
    for module, purpose, how in TOOLCHAIN:
        try:
            version = getattr(importlib.import_module(module), "__version__", "?")
            print(f"  ok       {module:14s} {version:12s} {purpose}")
        except ImportError:
            print(f"  missing  {module:14s} {'':12s} {purpose}: {how}")
    try:
        import onnxruntime

        print(f"onnxruntime execution providers: {', '.join(onnxruntime.get_available_providers())}")
    except ImportError:
        pass
    return 0


def cmd_bundle(args) -> int:
    from export.exporter import ExportConfig, export_bundle

    manifest = export_bundle(ExportConfig(checkpoint=args.checkpoint, out=args.out, precision=args.precision,
                                          force=args.force, text_mode=not args.no_text_mode,
                                          parity_frames=args.parity_frames, dataset=args.dataset,
                                          closed_loop_seeds=args.closed_loop_seeds, eval_workers=args.eval_workers))
    parity = manifest["metrics"]["parity_fp32"]
    size = sum(f["bytes"] for f in manifest["files"].values())
    print(f"bundle {args.out}: {manifest['precision']}, {size / 1e6:.2f} MB; fp32 parity on {parity['frames']} frames: "
          f"max |logit diff| {parity['max_abs_logit_diff']:.2e}, frames with identical tokens {parity['identical_tokens']:.1%}"
          f" (every decode mode: {', '.join(parity['decode_modes'])})")
    versus = manifest["metrics"].get(f"{manifest['precision']}_vs_fp32")
    if versus:
        print(f"{manifest['precision']} against fp32: token agreement {versus['token_agreement']:.1%}, "
              f"mean bin error {versus['mean_bin_error']:.2f}, max |logit diff| {versus['max_abs_logit_diff']:.2e}")
    loop = manifest["metrics"].get("closed_loop")
    if loop:
        overall = loop["tasks"]["overall"]
        print(f"closed loop ({loop['config']['seeds_per_task']} unseen seeds per task): {overall['successes']}/"
              f"{overall['episodes']} ({overall['success_rate']:.1%}); per task in manifest.json metrics.closed_loop")
    return 0


def cmd_verify(args) -> int:
    from export.exporter import parity_check, parity_frames, ExportConfig, PARITY_MAX_LOGIT_DIFF
    from distill.reference_policy import load_vla_folder
    from runtime.bundle import Bundle
    from runtime.errors import UserError

    bundle = Bundle.load(args.bundle)  # sha256 of every file, every required field
    source = args.checkpoint or bundle.manifest["model"]["source"]
    model, text_tok, _ = load_vla_folder(source)
    config = ExportConfig(checkpoint=source, out=args.bundle, force=True, parity_frames=args.parity_frames,
                          dataset=args.dataset)
    parity = parity_check(model.eval(), text_tok, bundle, *parity_frames(config, model, config.parity_frames))
    precision = bundle.manifest["precision"]
    print(f"{args.bundle} ({precision}): files and manifest ok; against {source} on {parity['frames']} frames: "
          f"max |logit diff| {parity['max_abs_logit_diff']:.2e}, frames with identical tokens {parity['identical_tokens']:.1%}"
          f" (every decode mode: {', '.join(parity['decode_modes'])})")
    if precision == "fp32" and (parity["max_abs_logit_diff"] > PARITY_MAX_LOGIT_DIFF or parity["identical_tokens"] < 1.0):
        raise UserError(f"{args.bundle} does not match {source} (limit {PARITY_MAX_LOGIT_DIFF:.0e}, identical tokens)")
    if precision != "fp32" and parity["identical_tokens"] < args.min_agreement:
        hint = "" if args.dataset else ("; these were seeded random frames, on which quantized graphs disagree "
                                        "more than on camera frames: pass --dataset for held-out frames")
        raise UserError(f"{args.bundle}: only {parity['identical_tokens']:.1%} of frames decode to the same tokens as "
                        f"{source} (--min-agreement {args.min_agreement:.0%}){hint}")
    return 0


def cmd_trt_check(args) -> int:
    from export.trt_check import check_bundle, format_table, unsupported

    findings = check_bundle(args.bundle)
    print(format_table(findings, verbose=args.verbose))
    bad = unsupported(findings)
    if bad:
        print(f"{len(bad)} unsupported: {', '.join(sorted({f'{f.graph}:{f.item}' for f in bad}))}", file=sys.stderr)
        return 1
    print("TensorRT can parse every graph (warnings and notes above are for older TensorRT releases and profiles)")
    return 0


def cmd_tensorrt(args) -> int:
    from export.tensorrt_build import TensorRTConfig, build_tensorrt

    section = build_tensorrt(TensorRTConfig(bundle=args.bundle, precision=args.precision, max_length=args.max_length,
                                            workspace_mb=args.workspace_mb, calibration=args.calibration,
                                            calibration_frames=args.calibration_frames))
    print(f"{args.bundle}: {section['precision']} TensorRT {section['tensorrt']} engines for {section['gpu']} "
          f"(compute capability {section['compute_capability']}), max length {section['max_length']}; run them "
          f"with the tensorrt engine on this machine only")
    return 0


cli = CommandLine("python -m export", "Export a checkpoint to a verified, self-describing ONNX bundle.", __doc__)
_b = cli.command("bundle", "export a checkpoint folder to a bundle (the default command)",
                 "python -m export models/student --out bundles/student-fp32", cmd_bundle,
                 description="Export the vision and decoder graphs, embedding table, tokenizer and manifest; check "
                             "parity against PyTorch; write the bundle atomically.")
_b.add_argument("checkpoint", help="model folder (models/student, models/teacher)")
_b.add_argument("--out", required=True, help="bundle folder to write")
_b.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8", "int8-static"],
                help="fp32, fp16, int8 (dynamic) or int8-static (calibrated on --dataset frames); quantized bundles "
                     "are compared with fp32 (default: %(default)s)")
_b.add_argument("--dataset", help="dataset whose held-out frames the parity check uses (default: seeded noise)")
_b.add_argument("--parity-frames", type=int, default=200, help="frames in the parity check (default: %(default)s)")
_b.add_argument("--closed-loop-seeds", type=int, default=0,
                help="run the finished bundle in the simulator for this many unseen seeds per task (the dataset's "
                     "tasks, or the default set) and record per-task success in the manifest (default: %(default)s)")
_b.add_argument("--eval-workers", type=int, default=2, help="processes for --closed-loop-seeds (default: %(default)s)")
_b.add_argument("--no-text-mode", action="store_true", help="skip the full-vocabulary decoder (question answering)")
_b.add_argument("--force", action="store_true", help="replace an existing --out")
_v = cli.command("verify", "check an existing bundle: sha256, manifest, parity against its checkpoint",
                 "python -m export verify bundles/student-fp32 --dataset data/demos", cmd_verify)
_v.add_argument("bundle", help="bundle folder")
_v.add_argument("--checkpoint", help="PyTorch model folder to compare with (default: the manifest's source)")
_v.add_argument("--dataset", help="dataset for held-out frames (default: seeded noise)")
_v.add_argument("--parity-frames", type=int, default=200, help="frames (default: %(default)s)")
_v.add_argument("--min-agreement", type=float, default=0.8,
                help="fp16/int8: least share of frames whose tokens equal PyTorch's (default: %(default)s)")
cli.command("doctor", "say which parts of the export toolchain this machine has", "python -m export doctor", cmd_doctor,
            description="Check for torch, transformers, onnx, onnxscript, onnxruntime (and its providers) and TensorRT.")
_c = cli.command("trt-check", "check that TensorRT's ONNX parser accepts a bundle's graphs (no GPU needed)",
                 "python -m export trt-check bundles/student-fp32", cmd_trt_check,
                 description="List opset, operators (against onnx-tensorrt's support matrix), quantization nodes, "
                             "int64 inputs and symbolic dimensions of every graph; exit 1 if any is unsupported.")
_c.add_argument("bundle", help="bundle folder, or one .onnx file")
_c.add_argument("--verbose", action="store_true", help="one row per operator type, supported ones too")
_t = cli.command("tensorrt", "build TensorRT engines into a bundle, on the GPU machine that will run them",
                 "python -m export tensorrt bundles/student-fp32 --precision int8 --calibration data/demos",
                 cmd_tensorrt,
                 description="Build tensorrt/vision.engine and tensorrt/decoder_action.engine from an fp32 (or fp16) "
                             "bundle with prefill and decode profiles, record them in manifest.json and rewrite the "
                             "bundle atomically. Needs TensorRT (JetPack on a Jetson) and an NVIDIA GPU.")
_t.add_argument("bundle", help="bundle folder (fp32 graphs; fp16 graphs for --precision fp16/fp32)")
_t.add_argument("--precision", default="fp16", choices=["fp16", "int8", "fp32"],
                help="fp16, int8 (explicit quantization calibrated on --calibration) or fp32 (default: %(default)s)")
_t.add_argument("--max-length", type=int, help="KV buffer and profile length (default: longest prompt + image "
                                               "tokens + action tokens)")
_t.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace (default: %(default)s)")
_t.add_argument("--calibration", help="dataset whose frames calibrate int8 (needed for --precision int8)")
_t.add_argument("--calibration-frames", type=int, default=64, help="frames for int8 calibration (default: %(default)s)")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `python -m export CHECKPOINT --out B` is `python -m export bundle CHECKPOINT --out B`.
    if argv and not argv[0].startswith("-") and argv[0] not in ("bundle", "verify", "doctor", "trt-check", "tensorrt"):
        argv.insert(0, "bundle")
    return cli.run(argv)


if __name__ == "__main__":
    sys.exit(main())
