"""The on-robot model: a bundle's ONNX graphs run with onnxruntime, greedy decoding masked to the action
ids, one decoder step per action token reusing the KV cache. numpy and onnxruntime only.

    engine = OnnxVla(Bundle.load("bundles/student-fp32"))
    tokens, logits = engine.decode_actions(frame, "open the drawer")   # (D,) ids, (D, 256) logits
    policy = OnnxPolicy.load("bundles/student-fp32"); policy.act(observation)
"""

from __future__ import annotations

import time

import numpy as np

from runtime.action_tokenizer import ActionIdTable, ActionTokenizer
from runtime.bundle import Bundle, BundleError
from runtime.camera import fit_frame
from runtime.decoding import NonFiniteLogits, choose, decode_plan_then_act, decode_text, text_ids
from runtime.errors import UserError
from runtime.policy import Action, Observation


def session_options(threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


DECODE_MODES = ("auto", "act", "loop")
# Output layer of the token loop: the action-mode graph's 256 rows, or the full vocabulary masked to the
# action ids afterwards (what a decoder without an action head does; kept to measure the head's saving).
HEADS = ("action", "vocabulary")
# Preferred first: TensorRT through onnxruntime, then CUDA, then the CPU (always present).
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def pick_providers(available: list[str] | None = None) -> list[str]:
    """The execution providers to ask for, best first, among those this onnxruntime build has."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    chosen = [p for p in PROVIDER_ORDER if p in available]
    return chosen or ["CPUExecutionProvider"]


def action_tokenizer(manifest: dict) -> ActionTokenizer:
    """The action tokenizer a bundle's manifest describes."""
    a = manifest["action"]
    table = ActionIdTable(ids=tuple(a["token_ids"]), vocab_size=a["vocab_size"], scheme="explicit", n_bins=a["n_bins"])
    return ActionTokenizer.from_statistics(a["names"], low=a["low"], high=a["high"], table=table, units=a["units"])


class BundleVla:
    """What every engine of a bundle shares (ONNX Runtime, TensorRT): the manifest's image, prompt, decoder
    and action spec, preprocessing, prompt lookup and `decode_actions`; engines implement `_decode`."""

    def _read_spec(self, bundle: Bundle) -> None:
        self.bundle = bundle
        m = bundle.manifest
        self.embed = bundle.embedding_table().astype(np.float32)  # (vocab, hidden)
        d = m["decoder"]
        self.layers, self.kv_heads, self.head_size = d["layers"], d["kv_heads"], d["head_size"]
        self.kv_dtype = np.float16 if d.get("kv_dtype") == "float16" else np.float32
        self.action_ids = np.asarray(m["action"]["token_ids"], dtype=np.int64)  # (256,)
        self.steps = len(m["action"]["names"])
        image = m["image"]
        self.size = (image["width"], image["height"])
        self.views, self.camera = image.get("views", 1), image.get("camera")
        self.bgr = image["channel_order"] == "BGR"
        self.scale = np.float32(image["scale"])
        self.mean = np.asarray(image["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(image["std"], np.float32).reshape(1, 3, 1, 1)
        self.prompts: dict[str, list[int]] = m["prompt"]["prompts"]
        self.past_names = [f"past_key_values.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]

    # -- inputs ----------------------------------------------------------------------------------
    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 as the manifest's image spec says."""
        frame = fit_frame(frame, self.size[1], self.size[0], self.views, self.camera)
        if self.bgr:
            frame = frame[:, :, ::-1]
        pixels = frame.transpose(2, 0, 1)[None].astype(np.float32) * self.scale
        return (pixels - self.mean) / self.std

    def prompt_ids(self, instruction: str) -> list[int]:
        key = instruction.strip().lower()
        if key not in self.prompts:
            known = ", ".join(sorted(self.prompts)[:6])
            raise UserError(f"unknown instruction '{instruction}': this model was trained on {len(self.prompts)} "
                            f"instructions ({known}, ...); see the bundle's manifest prompt.prompts")
        return self.prompts[key]

    def decode_actions(self, frame: np.ndarray, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """Greedy masked decode of one action: (D,) vocabulary ids and (D, 256) action logits."""
        tokens, logits, _ = self._decode(self.preprocess(frame), self.prompt_ids(instruction))
        return tokens, logits

    def _decode(self, pixels: np.ndarray, prompt: list[int], use_prompt_cache: bool = True
                ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """(D,) tokens, (D, 256) logits and stage timings for preprocessed pixels and prompt ids."""
        raise NotImplementedError


class OnnxVla(BundleVla):
    """Vision graph + action-mode decoder graph of a bundle, on onnxruntime."""

    def __init__(self, bundle: Bundle, threads: int = 1, providers: list[str] | None = None,
                 decode: str = "auto", temperature: float = 0.0, rng: np.random.Generator | None = None,
                 io_binding: bool = False, head: str = "action") -> None:
        """`providers`: onnxruntime execution providers in order of preference (default: the best this
        onnxruntime build has, see `pick_providers`); `decode`: "act" runs the bundle's one-call action
        graph, "loop" one decoder call per action token, "auto" the act graph where the bundle has one
        (and greedy decoding is asked for). `temperature` > 0 samples each token with the explicit
        generator `rng` (loop mode); 0 is greedy. `io_binding` keeps the loop's KV cache in onnxruntime
        between tokens (measured: no gain at these sizes on the CPU, see the README). `head`: "action"
        decodes with `decoder_action` (256 output rows); "vocabulary" runs the loop on `decoder_text` and
        masks its full-vocabulary logits to the action ids (same tokens, the cost the action head saves)."""
        import onnxruntime as ort

        self._read_spec(bundle)
        m = bundle.manifest
        if decode not in DECODE_MODES:
            raise UserError(f"unknown decode mode '{decode}': choose one of {', '.join(DECODE_MODES)}")
        if decode == "act" and "act" not in m["graphs"]:
            raise UserError(f"{bundle.root} has no act graph (exported before it existed): re-export it, or use "
                            f"decode='loop'")
        if head not in HEADS:
            raise UserError(f"unknown head '{head}': choose one of {', '.join(HEADS)}")
        if head == "vocabulary" and decode == "act":
            raise UserError("the act graph has the 256-row action head: decode with the full vocabulary with "
                            "decode='loop'")
        if temperature > 0 and rng is None:
            raise ValueError("sampling (temperature > 0) needs an explicit generator: rng=np.random.default_rng(seed)")
        if temperature > 0 and decode == "act":
            raise UserError("the act graph decodes greedily: sample with decode='loop'")
        self.temperature, self.rng = float(temperature), rng
        self.io_binding = bool(io_binding)
        providers = providers or pick_providers()
        options = session_options(threads)
        self._options, self._providers = options, providers

        def session(graph: str):
            return ort.InferenceSession(str(bundle.path(m["graphs"][graph]["file"])), options, providers=providers)

        self.vision = session("vision")
        self.decoder = session("decoder_action" if head == "action" else "decoder_text")
        # (256,) positions of the action ids in the full vocabulary's logits; None: logits are action rows
        self._vocab_rows = None if head == "action" else self.action_ids
        use_act = head == "action" and decode != "loop" and temperature <= 0 and "act" in m["graphs"]
        self.act = session("act") if use_act else None
        self._text = None  # decoder_text session, opened on the first question or plan
        self.decode_mode = "act" if self.act is not None else "loop"
        self.providers = self.decoder.get_providers()  # what onnxruntime actually chose
        self._prompt_kv: dict[tuple[int, ...], tuple[dict[str, np.ndarray], int]] = {}

    def warm_up(self, frames: int = 3) -> None:
        """Run a few actions on a grey frame for every instruction: session start-up costs (allocations,
        kernel selection) land here instead of in the first control step; the prompt caches get filled."""
        grey = np.full((self.size[1], self.size[0], 3), 128, np.uint8)
        pixels = self.preprocess(grey)
        for prompt in self.prompts.values():
            for _ in range(frames):
                self._decode(pixels, prompt)

    # -- decoding --------------------------------------------------------------------------------
    def _empty_past(self) -> dict[str, np.ndarray]:
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), self.kv_dtype)
        return {name: empty for name in self.past_names}

    def decoder_feeds(self, embeds: np.ndarray, past: dict | None, offset: int) -> dict:
        """Feeds of a decoder graph: `embeds` (1, S, hidden) at positions offset..offset+S-1 after a
        cache of `offset` positions (`past`, or an empty cache when None); the mask covers all of them."""
        length = offset + embeds.shape[1]
        return {"inputs_embeds": embeds, "attention_mask": np.ones((1, length), np.int64),
                "position_ids": np.arange(offset, length, dtype=np.int64)[None],
                **(self._empty_past() if past is None else past)}

    def prompt_cache(self, prompt: tuple[int, ...]) -> tuple[dict[str, np.ndarray], int]:
        """The prompt's KV cache and length, computed once and reused for every frame (the prompt comes
        before the image, so its keys and values never depend on the frame)."""
        cached = self._prompt_kv.get(prompt)
        if cached is None:
            outputs = self.decoder.run(None, self.decoder_feeds(self.embed[list(prompt)][None], None, 0))
            cached = (dict(zip(self.past_names, outputs[1:])), len(prompt))
            self._prompt_kv[prompt] = cached
        return cached

    def _decode(self, pixels: np.ndarray, prompt: list[int], use_prompt_cache: bool = True
                ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        if self.act is not None and use_prompt_cache:
            return self._decode_act(pixels, prompt)
        return self._decode_loop(pixels, prompt, use_prompt_cache)

    def _decode_act(self, pixels: np.ndarray, prompt: list[int]) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """One session call: vision, image prefill and every greedy action step inside the act graph."""
        past, _ = self.prompt_cache(tuple(prompt))
        t0 = time.perf_counter()
        bins, logits = self.act.run(None, {"pixel_values": pixels, **past})  # (1, A) int64, (1, A, 256)
        elapsed = time.perf_counter() - t0
        logits = logits[0].astype(np.float32, copy=False)
        bad = ~np.all(np.isfinite(logits), axis=1)
        if bad.any():
            raise NonFiniteLogits(f"non-finite logits at action token {int(np.argmax(bad))}: no action is sent")
        bins = bins[0]
        if bins.shape != (self.steps,) or bins.min() < 0 or bins.max() >= len(self.action_ids):
            raise NonFiniteLogits(f"the act graph returned bins {bins.tolist()}: no action is sent")
        return self.action_ids[bins], logits, {"act": elapsed}

    def _run_decoder(self, feeds: dict) -> list:
        """One decoder call: [logits as numpy, present KV...]. With `io_binding` the KV outputs stay
        onnxruntime OrtValues and are bound as the next call's inputs without a copy through numpy."""
        if not self.io_binding:
            return self.decoder.run(None, feeds)
        binding = self.decoder.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for output in self.decoder.get_outputs():
            binding.bind_output(output.name, "cpu")
        self.decoder.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return [outputs[0].numpy(), *outputs[1:]]

    def _decode_loop(self, pixels: np.ndarray, prompt: list[int], use_prompt_cache: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Vision, then one decoder call per action token reusing the KV cache; argmax in numpy."""
        timings = {}
        t0 = time.perf_counter()
        image = self.vision.run(None, {"pixel_values": pixels})[0].astype(np.float32)  # (1, N, hidden)
        t1 = time.perf_counter()
        timings["vision"] = t1 - t0
        if use_prompt_cache:  # prefill only the image after the cached prompt
            past, offset = self.prompt_cache(tuple(prompt))
            embeds = image
        else:  # prefill [prompt | image] from scratch
            past, offset = None, 0
            embeds = np.concatenate([self.embed[prompt][None], image], axis=1)  # (1, L, hidden)
        length = offset + embeds.shape[1]
        feeds = self.decoder_feeds(embeds, past, offset)
        tokens, all_logits = [], []
        for step in range(self.steps):
            outputs = self._run_decoder(feeds)
            logits = outputs[0][0, -1].astype(np.float32)  # (256,) action logits, or (V,) with head="vocabulary"
            if self._vocab_rows is not None:
                logits = logits[self._vocab_rows]  # (256,): the mask, as a gather
            if not np.all(np.isfinite(logits)):
                raise NonFiniteLogits(f"non-finite logits at action token {step}: no action is sent")
            bin_index = choose(logits, None, self.temperature, self.rng)
            tokens.append(int(self.action_ids[bin_index]))
            all_logits.append(logits)
            if step == 0:
                timings["prefill"] = time.perf_counter() - t1
            if step + 1 == self.steps:
                break
            feeds = self.decoder_feeds(self.embed[tokens[-1]][None, None],
                                       dict(zip(self.past_names, outputs[1:])), length)
            length += 1
        timings["decode"] = time.perf_counter() - t1 - timings["prefill"]
        return np.asarray(tokens, np.int64), np.stack(all_logits), timings


class TextMode:
    """Text-mode decoding over a bundle's full-vocabulary decoder: answers to scene questions and
    plan-then-act. Needs `graphs.decoder_text` (exported unless --no-text-mode)."""

    def __init__(self, engine: OnnxVla) -> None:
        import onnxruntime as ort

        from runtime.text_ids import IdDecoder

        m = engine.bundle.manifest
        if "decoder_text" not in m["graphs"]:
            raise UserError(f"{engine.bundle.root} has no text-mode decoder (exported with --no-text-mode): "
                            f"re-export without it to answer questions or plan")
        self.engine = engine
        self.session = ort.InferenceSession(str(engine.bundle.path(m["graphs"]["decoder_text"]["file"])),
                                            engine._options, providers=engine._providers)
        tok = m["tokenizer"]
        self.eos_id = tok["eos_id"]
        self.allowed = text_ids(m["decoder"]["vocab_size"], engine.action_ids, banned=(tok["pad_id"], tok["bos_id"]))
        self.decoder = IdDecoder.load(engine.bundle.path(m["tokenizer"]["file"]))
        self.questions: dict[str, list[int]] = m["prompt"].get("questions", {})

    def prefill(self, frame: np.ndarray, prompt: list[int]):
        """(first logits (vocab,), step) after [prompt | image]; `step(token)` feeds one token."""
        e = self.engine
        image = e.vision.run(None, {"pixel_values": e.preprocess(frame)})[0].astype(np.float32)
        embeds = np.concatenate([e.embed[prompt][None], image], axis=1)  # (1, L, hidden)
        out = self.session.run(None, e.decoder_feeds(embeds, None, 0))
        state = {"past": dict(zip(e.past_names, out[1:])), "length": embeds.shape[1]}

        def step(token: int) -> np.ndarray:
            n = state["length"]
            out = self.session.run(None, e.decoder_feeds(e.embed[token][None, None], state["past"], n))
            state["past"], state["length"] = dict(zip(e.past_names, out[1:])), n + 1
            return out[0][0, -1]

        return out[0][0, -1], step

    def answer(self, frame: np.ndarray, question: str, max_tokens: int = 24) -> str:
        """The model's answer to one of the bundle's scene questions about `frame`."""
        key = question.strip().lower()
        if key not in self.questions:
            known = "; ".join(sorted(self.questions)[:4])
            raise UserError(f"unknown question '{question}': the model was trained on {len(self.questions)} "
                            f"questions ({known}; ...), listed in the manifest's prompt.questions")
        first, step = self.prefill(frame, self.questions[key])
        ids = decode_text(step, first, self.allowed, self.eos_id, max_tokens, self.engine.temperature,
                          self.engine.rng)
        return self.decoder.decode(ids).strip()

    def plan_then_act(self, frame: np.ndarray, instruction: str, max_plan: int = 32) -> tuple[str, np.ndarray]:
        """(plan text, (A,) action ids): "plan:" is fed after the image, the model writes a plan until
        " action:" (forced after `max_plan` tokens), then the action tokens are decoded masked."""
        e, p = self.engine, self.engine.bundle.manifest["prompt"]
        if "plan_marker_ids" not in p or "action_marker_ids" not in p:
            raise UserError(f"{e.bundle.root} predates plan-then-act (no plan/action marker ids): re-export it")
        first, step = self.prefill(frame, e.prompt_ids(instruction))
        for token in p["plan_marker_ids"]:
            first = step(token)
        plan, ids = decode_plan_then_act(step, first, e.steps, e.action_ids, p["action_marker_ids"], self.allowed,
                                         max_plan, e.temperature, e.rng)
        return self.decoder.decode(plan).strip(), ids


class OnnxPolicy:
    """A bundle behind the `Policy` protocol (any `BundleVla` engine; `name` says which)."""

    name = "onnx"

    def __init__(self, engine: BundleVla) -> None:
        self.engine = engine
        self.tokenizer = action_tokenizer(engine.bundle.manifest)

    @classmethod
    def load(cls, path, threads: int = 1) -> "OnnxPolicy":
        return cls(OnnxVla(Bundle.load(path), threads=threads))

    def reset(self) -> None:
        """No state between steps."""

    def act(self, observation: Observation) -> Action:
        t0 = time.perf_counter()
        pixels = self.engine.preprocess(observation.image)
        prompt = self.engine.prompt_ids(observation.instruction)
        t1 = time.perf_counter()
        tokens, _, timings = self.engine._decode(pixels, prompt)
        t2 = time.perf_counter()
        values = self.tokenizer.decode(tokens)
        return Action(values=values, tokens=tokens,
                      timings={"preprocess": t1 - t0, **timings, "detokenize": time.perf_counter() - t2})


__all__ = ["BundleVla", "OnnxVla", "OnnxPolicy", "NonFiniteLogits", "BundleError", "action_tokenizer"]
