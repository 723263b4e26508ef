"""A model folder's README.md: how it was made (command, seed, data), its size and cost, and its
measured quality (held-out token and question accuracy, closed-loop success per task).

    python -m distill card models/teacher --eval runs/eval_teacher.json
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runtime.atomic_io import atomic_open
from runtime.errors import UserError

EVAL_FILE = "eval_closed_loop.json"


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {path} is not valid JSON ({err})") from None


def write_card(folder: str | Path, eval_report: str | Path | None = None) -> Path:
    """Write `folder/README.md` from `training.json` (and an evaluation report, copied beside it)."""
    folder = Path(folder)
    training = _read_json(folder / "training.json", "training record")
    evaluation = None
    if eval_report is not None:
        evaluation = _read_json(Path(eval_report), "evaluation report")
        if Path(eval_report).resolve() != (folder / EVAL_FILE).resolve():
            shutil.copyfile(eval_report, folder / EVAL_FILE)
    held = training["heldout"]
    sizes = training["config"]["sizes"]
    flops = training.get("flops_per_action", {}).get("total")
    camera = _read_json(folder / "config.json", "model config").get("camera") if (folder / "config.json").is_file() else None
    lines = [
        f"# {folder.name}",
        "",
        "A vla-edge VLA: SigLIP vision tower, linear projector, Llama decoder; actions are 256-bin tokens of",
        "its vocabulary (RT-2). Load with `VlaModel.from_pretrained(folder)` (or `AutoModel.from_pretrained`",
        "after `import distill.model`); run it with `distill.reference_policy.TorchVlaPolicy.load(folder)`.",
        "",
        "## How it was made",
        "",
        "```bash",
        " ".join(training["command"]),
        "```",
        "",
        *([f"- warm-started from `{training['config']['init_from']}` (the weights that folder held when this run started)"]
          if training["config"].get("init_from") else []),
        f"- seed {training['seed']}, {training['steps']} steps of batch {training['config']['batch_size']} "
        f"({training['samples_seen']} samples), {training['train_seconds'] / 3600:.2f} h on {training['device']} "
        f"with {training['threads']} thread(s), {training['samples_per_second']} samples/s",
        f"- data: {training['dataset']['frames']} frames in {training['dataset']['episodes']} episodes "
        f"({training['dataset']['train_episodes']} for training, {training['dataset']['heldout_episodes']} held out); "
        f"robot share of each batch {training['config']['robot_ratio']}",
        f"- size: {training['parameters'] / 1e6:.2f}M parameters; "
        + (f"{sizes.get('views', 1)} views of {sizes['image_size']}x{sizes['image_size']} side by side "
           f"({camera or 'camera rig'}), " if sizes.get("views", 1) > 1
           else f"{sizes['image_size']}x{sizes['image_size']} images, ")
        + f"{training['image_tokens']} image tokens; vision {sizes['vision_width']} wide x {sizes['vision_layers']} layers; "
        f"decoder {sizes['text_width']} wide x {sizes['text_layers']} layers"
        + (f"; {flops / 1e6:.0f} MFLOPs per action" if flops else ""),
        "",
        "## Held-out frames (greedy decoding, masked)",
        "",
        f"- action token accuracy {held['action_token_accuracy']:.3f}, mean bin error {held['action_bin_error_mean']:.2f} bins",
        f"- question accuracy {held['question_accuracy']:.3f} "
        f"({', '.join(f'{k} {v:.2f}' for k, v in held['question_accuracy_by_kind'].items())})",
    ]
    if evaluation is not None:
        cfg = evaluation["config"]
        lines += [
            "",
            f"## Closed loop ({cfg['seeds_per_task']} unseen seeds per task from {cfg['seed_start']}, "
            f"at most {cfg['max_steps']} steps)",
            "",
            "| task | success | rate | mean steps |",
            "| --- | --- | --- | --- |",
        ]
        for task, row in evaluation["tasks"].items():
            lines.append(f"| {task} | {row['successes']}/{row['episodes']} | {100 * row['success_rate']:.0f}% | "
                         f"{row['mean_length']:.1f} |")
    path = folder / "README.md"
    with atomic_open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
