"""The on-robot model on TensorRT: the same interface as `OnnxVla` (preprocess, prompt ids, greedy
decoding masked to the action ids, one decoder step per action token with the KV cache), running the
engines `python -m export tensorrt` built into the bundle. TensorRT and libcudart are loaded lazily
(runtime/nvidia.py); nothing else is needed.

Memory is allocated once, at the engines' `max_length` (manifest `tensorrt.max_length`): inputs, logits,
and two static KV buffers per `past_key_values.{i}.*` / `present.{i}.*` tensor, each
(1, kv_heads, max_length, head_size). Step t reads the past from one set and writes the present into
the other; the next step swaps them, so the cache is never copied. Each frame prefills
[prompt | image] (profile `prefill`, past 0) and then decodes one token per step (profile `decode`).

    engine = TrtVla(Bundle.load("bundles/student-fp32"))      # refuses engines built for another GPU
    tokens, logits = engine.decode_actions(frame, "open the drawer")   # (D,) ids, (D, 256) logits
"""

from __future__ import annotations

import time

import numpy as np

from runtime.bundle import Bundle, BundleError
from runtime.errors import UserError
from runtime.nvidia import CudaRuntime, engine_target, require_tensorrt, trt_logger
from runtime.onnx_engine import BundleVla, NonFiniteLogits, OnnxPolicy


def check_compatible(section: dict, here: dict, root) -> None:
    """Refuse engines built for another GPU model, compute capability or TensorRT version."""
    keys = ("gpu", "compute_capability", "tensorrt")
    if any(str(section.get(k)) != str(here.get(k)) for k in keys):
        raise BundleError(
            f"{root}: its TensorRT engines were built for {section.get('gpu')} (compute capability "
            f"{section.get('compute_capability')}) with TensorRT {section.get('tensorrt')}; this machine has "
            f"{here.get('gpu')} ({here.get('compute_capability')}) with TensorRT {here.get('tensorrt')}. Engines "
            f"only run where they were built: rebuild them here with `python -m export tensorrt {root}` (the "
            f"bundle's ONNX graphs are portable), or use the onnx engine")


class TrtVla(BundleVla):
    """Vision engine + action-mode decoder engine of a bundle, on TensorRT (batch 1)."""

    def __init__(self, bundle: Bundle, trt=None, cuda=None) -> None:
        self._read_spec(bundle)
        section = bundle.manifest.get("tensorrt")
        if not section:
            raise BundleError(f"{bundle.root} has no TensorRT engines: build them on this machine with "
                              f"`python -m export tensorrt {bundle.root}`, or use the onnx engine")
        self.trt = trt or require_tensorrt()
        self.cuda = cuda or CudaRuntime.load()
        check_compatible(section, engine_target(self.trt, self.cuda), bundle.root)
        self.max_length = int(section["max_length"])
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.stream = self.cuda.stream()
        self._runtime = self.trt.Runtime(trt_logger(self.trt))
        self._in_flight: list[np.ndarray] = []  # host arrays of queued copies, kept until synchronize
        vision, decoder = self._engine(section, "vision"), self._engine(section, "decoder_action")
        self.vision_ctx = self._context(vision, section, "vision", "image")
        self.prefill_ctx = self._context(decoder, section, "decoder_action", "prefill")
        self.decode_ctx = self._context(decoder, section, "decoder_action", "decode")
        self.dtypes, self.engine_inputs = {}, set()
        for engine in (vision, decoder):
            for name in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors)):
                self.dtypes[name] = np.dtype(self.trt.nptype(engine.get_tensor_dtype(name)))
                if engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                    self.engine_inputs.add(name)
        self._allocate()

    # -- set-up ----------------------------------------------------------------------------------
    def _engine(self, section: dict, graph: str):
        data = self.bundle.path(section["engines"][graph]["file"]).read_bytes()
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BundleError(f"{self.bundle.root}: TensorRT cannot load the {graph} engine (see its log): rebuild "
                              f"it here with `python -m export tensorrt {self.bundle.root}`")
        return engine

    def _context(self, engine, section: dict, graph: str, profile: str):
        names = [p["name"] for p in section["engines"][graph]["profiles"]]
        if profile not in names:
            raise BundleError(f"{self.bundle.root}: the {graph} engine has no '{profile}' profile: rebuild the engines")
        context = engine.create_execution_context()
        context.set_optimization_profile_async(names.index(profile), self.stream)
        return context

    def _allocate(self) -> None:
        """Device buffers at their largest shapes; two KV sets (see the module docstring)."""
        m, n = self.bundle.manifest, self.max_length
        hidden, rows = m["decoder"]["hidden_size"], m["action"]["n_bins"]
        image_tokens = m["prompt"]["image_tokens"]
        shapes = {"pixel_values": (1, 3, self.size[1], self.size[0]), "image_embeds": (1, image_tokens, hidden),
                  "inputs_embeds": (1, n, hidden), "attention_mask": (1, n), "position_ids": (1, n),
                  "logits": (1, n, rows)}
        self.buffers = {name: self._malloc(shape, self.dtypes.get(name, np.float32)) for name, shape in shapes.items()}
        kv_shape, kv_dtype = (1, self.kv_heads, n, self.head_size), self.dtypes.get(self.present_names[0], np.float32)
        self.kv = [[self._malloc(kv_shape, kv_dtype) for _ in self.past_names] for _ in range(2)]
        if "attention_mask" in self.dtypes:  # all ones, always: only its shape changes
            self._upload("attention_mask", np.ones((1, n)))
            self._synchronize()

    def _malloc(self, shape: tuple, dtype) -> int:
        return self.cuda.malloc(int(np.prod(shape)) * np.dtype(dtype).itemsize)

    def close(self) -> None:
        """Free the device buffers (the engine is unusable afterwards)."""
        for ptr in [*getattr(self, "buffers", {}).values(), *[p for kv in getattr(self, "kv", []) for p in kv]]:
            self.cuda.free(ptr)
        self.buffers, self.kv = {}, []

    # -- running ---------------------------------------------------------------------------------
    def _upload(self, name: str, array: np.ndarray) -> None:
        self._in_flight.append(self.cuda.upload(self.buffers[name], array.astype(self.dtypes[name]), self.stream))

    def _synchronize(self) -> None:
        self.cuda.synchronize(self.stream)
        self._in_flight.clear()

    def _run(self, context, shapes: dict[str, tuple], addresses: dict[str, int]) -> None:
        for name, shape in shapes.items():
            if name in self.engine_inputs and context.set_input_shape(name, shape) is False:
                raise UserError(f"input {name} of shape {shape} is outside the TensorRT profile (max length "
                                f"{self.max_length}): rebuild the engines with a larger --max-length")
        for name, ptr in addresses.items():
            if name in self.dtypes:
                context.set_tensor_address(name, ptr)
        if not context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT failed to run an engine (see its log)")

    def _image_embeds(self, pixels: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 -> (1, N, hidden) float32."""
        self._upload("pixel_values", pixels)
        b = self.buffers
        self._run(self.vision_ctx, {"pixel_values": pixels.shape},
                  {"pixel_values": b["pixel_values"], "image_embeds": b["image_embeds"]})
        image = np.empty((1, self.bundle.manifest["prompt"]["image_tokens"], self.embed.shape[1]),
                         self.dtypes["image_embeds"])
        self.cuda.download(image, b["image_embeds"], self.stream)
        self._synchronize()
        return image.astype(np.float32)

    def _step(self, context, embeds: np.ndarray, past: int, current: int) -> np.ndarray:
        """One decoder call: embeds (1, S, hidden) at positions past..past+S-1, the past read from KV set
        `current`, the present written into the other one; returns the last position's (256,) logits."""
        seq = embeds.shape[1]
        self._upload("inputs_embeds", embeds)
        self._upload("position_ids", np.arange(past, past + seq)[None])
        shapes = {"inputs_embeds": embeds.shape, "attention_mask": (1, past + seq), "position_ids": (1, seq),
                  **{name: (1, self.kv_heads, past, self.head_size) for name in self.past_names}}
        addresses = {name: self.buffers[name] for name in ("inputs_embeds", "attention_mask", "position_ids", "logits")}
        addresses.update(zip(self.past_names, self.kv[current]))
        addresses.update(zip(self.present_names, self.kv[1 - current]))
        self._run(context, shapes, addresses)
        logits = np.empty(len(self.action_ids), self.dtypes["logits"])
        self.cuda.download(logits, self.buffers["logits"] + (seq - 1) * logits.nbytes, self.stream)
        self._synchronize()
        return logits.astype(np.float32)

    def _decode(self, pixels: np.ndarray, prompt: list[int], use_prompt_cache: bool = True
                ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Greedy masked decode of one action; `use_prompt_cache` is accepted for OnnxVla's signature (every
        frame prefills [prompt | image]: on a GPU the prompt tokens cost next to nothing)."""
        t0 = time.perf_counter()
        image = self._image_embeds(pixels)
        t1 = time.perf_counter()
        timings = {"vision": t1 - t0}
        embeds = np.concatenate([self.embed[list(prompt)][None], image], axis=1)  # (1, L, hidden)
        if embeds.shape[1] + self.steps - 1 > self.max_length:
            raise UserError(f"the prompt ({len(prompt)} tokens), image and action tokens need more than the engines' "
                            f"max length {self.max_length}: rebuild them with a larger --max-length")
        tokens, all_logits, past, current, context = [], [], 0, 0, self.prefill_ctx
        for step in range(self.steps):
            logits = self._step(context, embeds, past, current)
            if not np.all(np.isfinite(logits)):
                raise NonFiniteLogits(f"non-finite logits at action token {step}: no action is sent")
            tokens.append(int(self.action_ids[int(np.argmax(logits))]))
            all_logits.append(logits)
            if step == 0:
                timings["prefill"] = time.perf_counter() - t1
            past, current, context = past + embeds.shape[1], 1 - current, self.decode_ctx
            embeds = self.embed[tokens[-1]][None, None]  # (1, 1, hidden)
        timings["decode"] = time.perf_counter() - t1 - timings["prefill"]
        return np.asarray(tokens, np.int64), np.stack(all_logits), timings


class TensorRTPolicy(OnnxPolicy):
    """A bundle's TensorRT engines behind the `Policy` protocol."""

    name = "tensorrt"

    @classmethod
    def load(cls, path, threads: int = 1) -> "TensorRTPolicy":
        return cls(TrtVla(Bundle.load(path)))


__all__ = ["TrtVla", "TensorRTPolicy", "check_compatible"]
