"""The compute floor: how fast could one action possibly be on this machine's single CPU thread?

    floor_s = FLOPs per action (distill/flops.py) / R

where R is the best single-thread float32 matrix-multiply rate measured in the same run, over matrix
shapes taken from the models themselves (each vision layer's [image tokens x width] @ [width x 4 width]
and [width x width], each decoder's [prefill length x width] @ [width x 4 width] and [width x width],
and the one-row products of a decode step). Two libraries are timed, each on one thread, and the faster
counts:

- numpy (its BLAS), in a child process started with OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=OMP_NUM_THREADS=1,
  because a BLAS reads its thread count once, when it is loaded;
- onnxruntime, a one-node MatMul graph in a session with one intra-op thread (the engine the runtime uses).

Each shape is multiplied repeatedly for at least `min_seconds` per trial, over several trials; the rate of
the fastest trial is kept (a floor is about what the machine can do, so the least disturbed trial counts).
A multiply-add counts as 2 FLOPs, as in distill/flops.py. measured / floor above 1 is overhead: memory
traffic (one-row decode products run far below R), attention, norms and activations (not counted in the
FLOPs), Python and session calls.

    python -m benchmarks.compute_floor '[[36, 192, 768], [41, 256, 1024]]'   # numpy rates, JSON (the child)
    rates = measure_matmul_rates([(36, 192, 768), (41, 256, 1024)])
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}


def model_shapes(config, prompt_tokens: int) -> list[tuple[int, int, int]]:
    """(m, k, n) products of one action of a VlaConfig: vision layers, prefill, one decode step."""
    v, t = config.vision_config, config.text_config
    n_img = (v.image_size // v.patch_size) ** 2  # one view; a rig's views run as a batch of this shape
    prefill = prompt_tokens + n_img
    shapes = [(n_img, v.hidden_size, v.intermediate_size), (n_img, v.hidden_size, v.hidden_size),
              (prefill, t.hidden_size, t.intermediate_size), (prefill, t.hidden_size, t.hidden_size),
              (1, t.hidden_size, t.intermediate_size)]
    return list(dict.fromkeys(shapes))


def _time_rate(run, flops: int, min_seconds: float, trials: int) -> float:
    """Best FLOP/s over `trials` trials of at least `min_seconds` each."""
    run()  # warm-up: allocation, kernel choice
    best = 0.0
    for _ in range(trials):
        reps, start = 0, time.perf_counter()
        while True:
            run()
            reps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, reps * flops / elapsed)
    return best


def numpy_rates(shapes: list[tuple[int, int, int]], min_seconds: float = 0.05, trials: int = 3) -> list[float]:
    """FLOP/s of numpy float32 matmul per shape, in this process (whatever threads its BLAS has)."""
    rng = np.random.default_rng(0)
    rates = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        rates.append(_time_rate(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), 2 * m * k * n, min_seconds,
                                trials))
    return rates


def numpy_rates_one_thread(shapes: list[tuple[int, int, int]], min_seconds: float = 0.05,
                           trials: int = 3) -> list[float] | None:
    """numpy's rates in a child process whose BLAS was loaded with one thread; None if the child failed."""
    env = dict(os.environ, **THREAD_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    code = [sys.executable, "-m", "benchmarks.compute_floor", json.dumps([list(s) for s in shapes]),
            str(min_seconds), str(trials)]
    try:
        proc = subprocess.run(code, env=env, capture_output=True, text=True, timeout=300, check=True)
        return [float(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def onnxruntime_rates(shapes: list[tuple[int, int, int]], min_seconds: float = 0.05, trials: int = 3) -> list[float]:
    """FLOP/s of a one-node onnxruntime MatMul per shape, one intra-op thread, weights as an initializer."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from runtime.onnx_engine import session_options

    rng = np.random.default_rng(0)
    rates = []
    for m, k, n in shapes:
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "matmul",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = min(model.ir_version, 10)
        session = ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
        feed = {"a": rng.standard_normal((m, k), dtype=np.float32)}
        rates.append(_time_rate(lambda s=session, f=feed: s.run(None, f), 2 * m * k * n, min_seconds, trials))
    return rates


def measure_matmul_rates(shapes: list[tuple[int, int, int]], quick: bool = False) -> dict:
    """Rates per shape and library (GFLOP/s) and the best one: the floor's R."""
    min_seconds, trials = (0.02, 2) if quick else (0.1, 5)
    shapes = list(dict.fromkeys(tuple(int(x) for x in s) for s in shapes))
    by_library = {"onnxruntime": onnxruntime_rates(shapes, min_seconds, trials)}
    rates = numpy_rates_one_thread(shapes, min_seconds, trials)
    if rates is not None:
        by_library["numpy"] = rates
    rows = [{"m": m, "k": k, "n": n, **{f"{lib}_gflops": r[i] / 1e9 for lib, r in by_library.items()}}
            for i, (m, k, n) in enumerate(shapes)]
    best_lib, best_index = max(((lib, i) for lib in by_library for i in range(len(shapes))),
                               key=lambda li: by_library[li[0]][li[1]])
    best = by_library[best_lib][best_index]
    return {"gflops": best / 1e9, "library": best_lib, "shape": list(shapes[best_index]), "shapes": rows,
            "threads": 1, "min_seconds_per_trial": min_seconds, "trials": trials,
            "method": "best single-thread float32 matmul rate over the models' own product shapes; numpy in a "
                      "child process with its BLAS at one thread, onnxruntime MatMul with one intra-op thread; "
                      "2 FLOPs per multiply-add"}


if __name__ == "__main__":  # the child process: numpy rates of the shapes in argv[1], one JSON line
    _shapes = [tuple(s) for s in json.loads(sys.argv[1])]
    _min = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    _trials = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    print(json.dumps(numpy_rates(_shapes, _min, _trials)))
