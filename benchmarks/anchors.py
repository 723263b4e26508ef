"""Published figures the benchmark tables are read against (DESIGN.md section 6), each with the hardware it
was measured on. They come from other models on other machines: they place our figures, they are not
like-for-like comparisons.

    for row in ANCHORS: row.system, row.figure, row.per_action_ms, row.hardware
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    system: str
    figure: str  # as published
    per_action_ms: str  # the figure as milliseconds per action where it is one ("-" where it is not)
    hardware: str
    kind: str  # "cloud", "desktop GPU", "embedded GPU", "datacenter GPU"


ANCHORS: tuple[Anchor, ...] = (
    Anchor("RT-2 PaLI-X 55B", "1-3 Hz", "333-1000", "cloud TPU pod, served over the network", "cloud"),
    Anchor("RT-2 PaLI-X 5B", "about 5 Hz", "200", "cloud TPU pod, served over the network", "cloud"),
    Anchor("OpenVLA 7B (bf16)", "about 6 Hz, 15 GB", "167", "NVIDIA RTX 4090", "desktop GPU"),
    Anchor("OpenVLA 7B via NanoLLM, fp16", "840 ms per action; success 86%", "840", "NVIDIA Jetson AGX Orin", "embedded GPU"),
    Anchor("OpenVLA 7B via NanoLLM, fp8", "471 ms per action; success 85%", "471", "NVIDIA Jetson AGX Orin", "embedded GPU"),
    Anchor("OpenVLA 7B via NanoLLM, int4", "336 ms per action; success 84%", "336", "NVIDIA Jetson AGX Orin", "embedded GPU"),
    Anchor("SmolVLA (TensorRT, pi.cpp)", "137.6 ms per step", "137.6", "NVIDIA Jetson AGX Orin", "embedded GPU"),
    Anchor("pi0.5 (TensorRT FP8+NVFP4)", "about 49 ms per step", "49", "NVIDIA Jetson AGX Thor", "embedded GPU"),
    Anchor("VLA-AD distillation (7B -> 158M student)", "12.5 Hz; 0.27% relative success gap", "80",
           "NVIDIA RTX 4090", "desktop GPU"),
    Anchor("OpenVLA-OFT (parallel decoding + chunking)", "26x throughput, 3x lower latency than OpenVLA", "-",
           "NVIDIA A100 / H100", "datacenter GPU"),
    Anchor("SmolVLA async inference", "30% faster response, 2x task throughput", "-", "consumer GPU", "desktop GPU"),
)
