"""Regularising mitigations: representation diversity and LoRA update decorrelation.

Both are extra loss terms added in the trainers' ``compute_loss``:

* diversity: lambda * mean pairwise cosine of the centred response hidden states at chosen
  layers, computed O(N d) as (||sum u_i||^2 - sum ||u_i||^2) / (N (N - 1)) on unit-normalised
  centred rows (never an N x N matrix), plus an optional hinge on per-feature std (variance
  floor) against the norm artefacts the cosine term alone can create;
* decorrelation: lambda * mean over LoRA modules of the fraction of the current update's energy
  that lies in the earlier stages' top-k left singular subspaces,
  ||U^T B A||_F^2 / ||B A||_F^2 = tr((U^T B)(A A^T)(U^T B)^T) / tr((B^T B)(A A^T)). Only r x r and
  k x r products are formed, never the out x in update. The ratio (not the raw norm) keeps one
  lambda meaningful across model widths and learning rates; its random baseline is k / out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from trl import DPOTrainer, SFTTrainer

_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Penalties


def mean_pairwise_cosine(h: torch.Tensor) -> torch.Tensor:
    """Mean cosine over distinct pairs of the centred rows of ``h`` (N x d), in O(N d)."""
    n = h.shape[0]
    if n < 2:
        return h.sum() * 0.0
    hc = h - h.mean(dim=0, keepdim=True)
    u = hc / hc.norm(dim=1, keepdim=True).clamp_min(1e-6)
    s = u.sum(dim=0)
    # sum ||u_i||^2 rather than N, so that an all-zero row (clamped) does not bias the mean
    return (s.pow(2).sum() - u.pow(2).sum()) / (n * (n - 1))


def variance_floor_penalty(h: torch.Tensor, floor: float) -> torch.Tensor:
    """Mean hinge max(0, floor - std_j) over features (VICReg-style variance term)."""
    if h.shape[0] < 2 or floor <= 0:
        return h.sum() * 0.0
    std = torch.sqrt(h.var(dim=0) + 1e-4)
    return torch.relu(floor - std).mean()


@dataclass(frozen=True)
class DiversitySpec:
    weight: float
    layers: tuple[int, ...] = (-1,)
    """hidden_states indices: 0 = embeddings, -1 = the last (post final norm) state."""
    variance_floor: float = 0.0


def diversity_penalty(
    hidden_states: Sequence[torch.Tensor], labels: torch.Tensor, spec: DiversitySpec
) -> torch.Tensor:
    """Mean over layers of the cosine (and floor) terms on response tokens (labels != -100)."""
    mask = labels != -100
    terms = []
    for layer in spec.layers:
        h = hidden_states[layer][mask].float()
        term = mean_pairwise_cosine(h)
        if spec.variance_floor > 0:
            term = term + variance_floor_penalty(h, spec.variance_floor)
        terms.append(term)
    return torch.stack(terms).mean()


def top_left_singular(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k left singular vectors of B A (B: out x r, A: r x in) via two QRs and an r x r SVD."""
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    us, s, _ = torch.linalg.svd(rb @ ra.T)
    k = min(k, int((s > s.max() * 1e-8).sum()) if s.numel() and s.max() > 0 else 0)
    return (qb @ us[:, :k]).float()


def _module_key(name: str) -> str:
    """Adapter tensor name -> the adapted module's path in the base model."""
    key = name
    for prefix in ("base_model.model.",):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for suffix in (
        ".lora_A.weight",
        ".lora_B.weight",
        ".lora_A.default.weight",
        ".lora_B.default.weight",
    ):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def load_adapter_factors(adapter_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module path: (A, B)} from a peft adapter directory (safetensors)."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if ".lora_A." in name:
            a[_module_key(name)] = t
        elif ".lora_B." in name:
            b[_module_key(name)] = t
    return {k: (a[k], b[k]) for k in a if k in b}


def prior_subspaces(adapter_dirs: Sequence[str | Path], k: int) -> dict[str, torch.Tensor]:
    """Per module, an orthonormal basis of the union of earlier stages' top-k left subspaces."""
    stacks: dict[str, list[torch.Tensor]] = {}
    for d in adapter_dirs:
        for key, (a, b) in load_adapter_factors(d).items():
            u = top_left_singular(a, b, k)
            if u.shape[1]:
                stacks.setdefault(key, []).append(u)
    out: dict[str, torch.Tensor] = {}
    for key, us in stacks.items():
        cat = torch.cat(us, dim=1).double()
        q, s, _ = torch.linalg.svd(cat, full_matrices=False)
        out[key] = q[:, : int((s > 1e-6).sum())].float()
    return out


def _lora_modules(model: torch.nn.Module) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    found = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in getattr(mod, "lora_A", {}):
            key = name
            for prefix in ("base_model.model.",):
                if key.startswith(prefix):
                    key = key[len(prefix) :]
            found[key] = mod
    return found


def decorrelation_penalty(model: torch.nn.Module, bases: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over modules of ||U^T B A||_F^2 / ||B A||_F^2 for the trainable ('default') adapter."""
    terms = []
    for key, mod in _lora_modules(model).items():
        u = bases.get(key)
        if u is None:
            continue
        a = mod.lora_A["default"].weight  # r x in
        b = mod.lora_B["default"].weight  # out x r
        u = u.to(device=b.device, dtype=b.dtype)
        aat = a @ a.T  # r x r
        utb = u.T @ b  # k x r
        num = torch.trace(utb @ aat @ utb.T)
        den = torch.trace((b.T @ b) @ aat)
        terms.append(num / (den + _EPS))
    if not terms:
        p = next(model.parameters())
        return p.sum() * 0.0
    return torch.stack(terms).mean()


# ---------------------------------------------------------------------------------------------
# Trainers


class _PenaltyMixin:
    rc_diversity: DiversitySpec | None = None
    rc_decorrelate_weight: float = 0.0
    rc_bases: dict[str, torch.Tensor] | None = None

    def _rc_scale(self, num_items_in_batch: Any) -> float:
        # Trainer leaves gradient accumulation to a loss normalised by num_items_in_batch; a
        # per-micro-batch penalty must then be averaged over the accumulation steps itself.
        steps = getattr(self, "current_gradient_accumulation_steps", 1) or 1
        return 1.0 / steps if num_items_in_batch is not None else 1.0

    def _rc_param_penalty(
        self, model: torch.nn.Module, num_items_in_batch: Any
    ) -> torch.Tensor | None:
        if self.rc_bases is None:
            return None
        pen = decorrelation_penalty(model, self.rc_bases)
        self._rc_log("decorrelate_penalty", pen)
        return self.rc_decorrelate_weight * pen * self._rc_scale(num_items_in_batch)

    def _rc_log(self, key: str, value: torch.Tensor) -> None:
        metrics = getattr(self, "_metrics", None)
        if metrics is not None:
            mode = "train" if self.model.training else "eval"  # type: ignore[attr-defined]
            metrics[mode][key].append(float(value.detach()))


class RegularizedSFTTrainer(_PenaltyMixin, SFTTrainer):
    """SFTTrainer with optional diversity and decorrelation terms (both off: plain SFT)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        if self.rc_diversity is None:
            loss = super().compute_loss(model, inputs, False, num_items_in_batch)
        else:
            # The fused LM head drops the backbone's hidden states, so this path runs the model's
            # own forward with output_hidden_states=True and takes its loss.
            labels = inputs["labels"]
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs.get("attention_mask"),
                labels=labels,
                output_hidden_states=True,
                use_cache=False,
                num_items_in_batch=num_items_in_batch,
            )
            pen = diversity_penalty(outputs.hidden_states, labels, self.rc_diversity)
            self._rc_log("diversity_penalty", pen)
            loss = outputs.loss + self.rc_diversity.weight * pen * self._rc_scale(
                num_items_in_batch
            )
        extra = self._rc_param_penalty(model, num_items_in_batch)
        if extra is not None:
            loss = loss + extra
        return loss


class RegularizedDPOTrainer(_PenaltyMixin, DPOTrainer):
    """DPOTrainer taking pre-tokenised pairs (exact token budgets) plus optional decorrelation."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # type: ignore[override]
        if "prompt_ids" in dataset.column_names:
            return dataset  # tokenised by repcollapse.train.pools with the same chat template
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        extra = self._rc_param_penalty(model, num_items_in_batch)
        if extra is None:
            return out
        if return_outputs:
            return out[0] + extra, out[1]
        return out + extra
