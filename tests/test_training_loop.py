"""The shared optimizer loop's mixed precision: bfloat16 autocast where the hardware has it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from distill.training import LoopSettings, bf16_is_native, resolve_precision, run_loop  # noqa: E402
from runtime.errors import UserError  # noqa: E402


def _fit_a_line(precision: str) -> tuple[torch.nn.Module, list[torch.dtype], dict]:
    """A few steps of a linear regression through run_loop; returns the model, the dtypes its layer computed
    in, and the loop state."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    true_weights = torch.linspace(-1, 1, 16)

    def sample(rng: np.random.Generator) -> dict:
        x = torch.from_numpy(rng.standard_normal((64, 16)).astype(np.float32))  # (B, 16)
        return {"x": x, "y": x @ true_weights}  # (B,)

    def loss_fn(m, batch):
        loss = torch.nn.functional.mse_loss(m(batch["x"]).squeeze(-1).float(), batch["y"])
        return loss, {}

    state = {"step": 0, "train_seconds": 0.0, "log": []}
    settings = LoopSettings(steps=60, seed=0, lr=1e-2, warmup_steps=5, log_every=10, checkpoint_every=10**6,
                            precision=precision)
    run_loop(model, torch.optim.AdamW(model.parameters(), lr=1e-2), state, settings, sample, loss_fn,
             save=lambda st: None, progress=False)
    return model, seen, state


def test_bf16_runs_the_layers_in_bfloat16_keeps_fp32_weights_and_still_learns():
    if not bf16_is_native(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16")
    model, seen, state = _fit_a_line("bf16")
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    losses = [entry["loss"] for entry in state["log"]]
    assert losses[-1] < 0.2 * losses[0]
    _, seen_fp32, _ = _fit_a_line("fp32")
    assert set(seen_fp32) == {torch.float32}


def test_precision_auto_follows_the_hardware_and_bad_requests_say_what_to_pass(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_is_native(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(UserError, match="--precision must be one of auto, bf16, fp32"):
        resolve_precision("fp16", cpu)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(UserError, match="no native bfloat16.*--precision fp32"):
        resolve_precision("bf16", cpu)
