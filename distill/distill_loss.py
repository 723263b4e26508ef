"""Distillation losses: temperature-scaled KL to the teacher plus cross-entropy on the true tokens.

Action positions: KL(teacher || student) over the 256 action ids at temperature T (times T**2, Hinton),
plus cross-entropy on the expert's tokens. Answer positions (co-distillation): the same KL over the
teacher's stored top-k ids (both distributions renormalized over those ids), plus cross-entropy on
the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill.teacher_data import IGNORE
from distill.teacher_labels import TeacherLabels


@dataclass(frozen=True)
class DistillWeights:
    temperature: float = 2.0
    kl: float = 1.0  # weight of the KL terms
    ce: float = 0.5  # weight of the cross-entropy terms


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid positions of T^2 KL(softmax(t/T) || softmax(s/T)); logits (..., K), valid (...)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1) * temperature**2  # (...)
    if valid is None:
        return kl.mean()
    return (kl * valid).sum() / valid.sum().clamp(min=1)


def distill_loss(model, batch: dict, labels: TeacherLabels, weights: DistillWeights,
                 device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """KL + CE on a mixed batch from CoTrainingData.sample (robot rows first, then questions)."""
    pixels = model.preprocess(batch["frames"].to(device))
    logits = model(pixels, batch["prompt_ids"].to(device), batch["prompt_mask"].to(device),
                   batch["target_inputs"].to(device))  # (B, 5, V)
    targets = batch["labels"].to(device)
    n_robot = len(batch["robot_rows"])
    parts: dict[str, float] = {}
    total = logits.new_zeros(())
    if n_robot:
        s = logits[:n_robot]
        ce = F.cross_entropy(s.flatten(0, 1), targets[:n_robot].flatten())
        kl = kl_to_teacher(s[..., model.action_ids], labels.action_logits[batch["robot_rows"]].to(device),
                           weights.temperature)
        total = total + weights.ce * ce + weights.kl * kl
        parts.update(action_ce=float(ce.detach()), action_kl=float(kl.detach()))
    if n_robot < len(logits):
        s = logits[n_robot:]
        t = targets[n_robot:]
        valid = (t != IGNORE).float()
        ce = F.cross_entropy(s.flatten(0, 1), t.flatten(), ignore_index=IGNORE)
        total = total + weights.ce * ce
        parts.update(question_ce=float(ce.detach()))
        if labels.qa_ids.shape[-1]:  # a teacher over another vocabulary leaves no question labels
            ids = labels.qa_ids[batch["qa_rows"]].to(device)  # (Bq, 5, k)
            kl = kl_to_teacher(s.gather(-1, ids), labels.qa_values[batch["qa_rows"]].to(device), weights.temperature, valid)
            total = total + weights.kl * kl
            parts.update(question_kl=float(kl.detach()))
    return total, parts
