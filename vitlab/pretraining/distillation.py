"""``vitlab.distill``: distil one or more large backbones into a smaller one on unlabelled images, with the proof.

Feature distillation as AM-RADIO (Ranzinger et al. 2024): the student's summary token (CLS, else the mean of its
patch tokens) and its patch tokens each go through a small per-teacher adaptor (2-layer MLP) and match the
teacher's, cosine on the summary and 0.9 cosine + 0.1 smooth-L1 on the patches
(:func:`vitlab.pretraining.losses.feature_loss`); the teacher's patch grid is interpolated to the student's, so
patch sizes and resolutions may differ (the aspect ratio may not). Several teachers (``"A,B"``) get one adaptor
each; the loss is their mean. The student is any backbone spec, including ``random:<name>`` (random init) and a
smaller timm ViT (``student_kwargs``, e.g. ``depth=3``); it starts from its own weights when it has them (then
the adaptors warm up first, as DINO's heads). Monitoring, the collapse guard, checkpoints and the artefact are
those of :func:`vitlab.pretraining.pretrain`; the verdict pairs the student against its starting point and against
each teacher on the monitor's test part, and measures its speed-up over each teacher with ``vitlab bench``'s code.

Example:
    >>> res = distill("demo:fmnist-vit", "random:demo:fmnist-vit", "sample:digits?limit=200",
    ...               monitor="sample:digits?limit=200", speed=False, max_steps=1, batch_size=16, monitor_every=0,
    ...               n_resamples=20, verdict_protocols="knn", progress=False)  # one step: a smoke run
    >>> [(p["a"], p["b"]) for p in res.record.details["verdict"]["knn"]]
    [('student', 'start'), ('student', 'teacher')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vitlab.backbones import Backbone, load_backbone
from vitlab.data import DataSource, load_source
from vitlab.errors import ConfigError
from vitlab.pretraining.common import PretrainResult, check_images, check_settings, run_training
from vitlab.pretraining.forward import TokenNet
from vitlab.pretraining.methods import Program
from vitlab.pretraining.recipe import PretrainRecipe
from vitlab.pretraining.views import distill_spec, make_views, normalize
from vitlab.record import data_block, start_record
from vitlab.outputs import check_output_dir

__all__ = ["distill", "DistillProgram", "check_shared_input"]


def check_shared_input(student: Backbone, teachers: dict[str, Backbone]) -> tuple[int, int]:
    """The working size ``(H, W)`` every model's input is resized from (the largest), or one clear line when the
    models cannot share an input (no patch tokens, or different aspect ratios).

    Example:
        >>> import vitlab
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")
        >>> check_shared_input(bb, {"t": bb})
        (28, 28)
    """
    from vitlab.pretraining.forward import check_trainable

    check_trainable(student)
    hs, ws = student.spec.preprocessing.input_size
    for label, t in teachers.items():
        if t.spec.grid_size[0] * t.spec.grid_size[1] <= 1:
            raise ConfigError(f"teacher {label} has no patch tokens to distil, so it cannot share a token grid with "
                              f"student {student.name}; use a ViT teacher.")
        ht, wt = t.spec.preprocessing.input_size
        if ht * ws != hs * wt:
            raise ConfigError(f"teacher {label} takes {ht}x{wt} images and student {student.name} takes {hs}x{ws}: "
                              "they cannot share an input (different aspect ratios; the same view cannot be resized "
                              "to both without distortion). Choose a student with the teacher's aspect ratio, e.g. "
                              f"student_kwargs img_size=[{hs},{hs * wt // ht}].")
    sizes = [tuple(student.spec.preprocessing.input_size)] + [tuple(t.spec.preprocessing.input_size)
                                                             for t in teachers.values()]
    return max(sizes)


def _mlp(cin: int, cout: int) -> nn.Module:
    hidden = max(cin, cout)
    return nn.Sequential(nn.Linear(cin, hidden), nn.GELU(), nn.Linear(hidden, cout))


class DistillProgram(Program):
    """Student (a copy of its starting backbone), frozen teachers (copies, kept out of the checkpoint: they never
    change), one summary and one patch adaptor per teacher."""

    def __init__(self, student: Backbone, teachers: dict[str, Backbone], canvas: tuple[int, int],
                 generator: torch.Generator, *, cls_weight: float = 1.0, patch_weight: float = 1.0,
                 crop_scale: tuple[float, float] = (0.5, 1.0), hflip: float = 0.5) -> None:
        from vitlab.tuning.methods import clone_backbone

        super().__init__()
        self.student = TokenNet(clone_backbone(student))
        self._teachers = {k: TokenNet(clone_backbone(t)).requires_grad_(False).eval() for k, t in teachers.items()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.adaptors = nn.ModuleDict({
                f"t{i}": nn.ModuleDict({"cls": _mlp(self.student.dim, t.dim), "patch": _mlp(self.student.dim, t.dim)})
                for i, t in enumerate(self._teachers.values())})
        self.labels = list(self._teachers)
        self.spec = distill_spec(tuple(canvas), crop_scale, hflip)
        self.cls_weight, self.patch_weight = cls_weight, patch_weight
        self.inputs = {"student": (student.spec.preprocessing, student.spec.patch_size),
                       **{k: (t.spec.preprocessing, t.spec.patch_size) for k, t in teachers.items()}}

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> DistillProgram:
        super()._apply(fn, *args, **kwargs)
        for t in self._teachers.values():  # frozen, outside state_dict, but on the same device
            t._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> DistillProgram:
        super().train(mode)
        for t in self._teachers.values():
            t.eval()
        return self

    def new_parameters(self) -> dict[str, nn.Parameter]:
        return {f"adaptors.{n}": p for n, p in self.adaptors.named_parameters()}

    def make_batch(self, images: torch.Tensor, indices: np.ndarray, *, seed: int, epoch: int,
                   device: torch.device) -> dict[str, Any]:
        view = make_views(images, indices, [self.spec], seed=seed, epoch=epoch)[0]
        out = {}
        for k, (prep, _) in self.inputs.items():
            out[k] = normalize(view, prep.mean, prep.std, tuple(prep.input_size)).to(device)
        return out

    def loss(self, batch: dict[str, Any], step: int, total: int) -> tuple[torch.Tensor, dict[str, float]]:
        from vitlab.pretraining.losses import feature_loss, interpolate_grid

        s_tok = self.student(batch["student"])
        s_cls, s_patch = self.student.pooled(s_tok), self.student.patches(s_tok)
        s_grid = tuple(d // p for d, p in zip(batch["student"].shape[-2:], self.student.patch_size))
        losses, stats = [], {}
        for i, (label, t) in enumerate(self._teachers.items()):
            x = batch[label]
            with torch.no_grad():
                t_tok = t(x)
                t_grid = tuple(d // p for d, p in zip(x.shape[-2:], t.patch_size))
                t_cls, t_patch = t.pooled(t_tok), interpolate_grid(t.patches(t_tok).float(), t_grid, s_grid)
            ad = self.adaptors[f"t{i}"]
            loss, parts = feature_loss(ad["cls"](s_cls), t_cls, ad["patch"](s_patch), t_patch,
                                       cls_weight=self.cls_weight, patch_weight=self.patch_weight)
            losses.append(loss)
            stats.update({f"{label}/{k}" if len(self._teachers) > 1 else k: v for k, v in parts.items()})
        return torch.stack(losses).mean(), stats


def _build_distill(job: dict[str, Any], bb: Backbone, source: DataSource, objs: dict[str, Any]) -> tuple[Any, Any]:
    from vitlab.pretraining.images import ImageStore

    teachers = objs.get("teachers") or {k: load_backbone(k) for k in job["teachers"]}
    canvas = check_shared_input(bb, teachers)
    program = DistillProgram(bb, teachers, canvas, torch.Generator().manual_seed(job["seed"]),
                             crop_scale=job["crop_scale"])
    return program, ImageStore(source, bb.spec.preprocessing, size=canvas)


def distill(teacher: Backbone | str | list[Backbone | str], student: Backbone | str, data: DataSource | str, *,
            monitor: DataSource | str | None = None, recipe: PretrainRecipe | None = None, seed: int = 0,
            test_fraction: float = 0.2, n_resamples: int = 1000, verdict_protocols: str = "knn,linear",
            crop_scale: tuple[float, float] = (0.5, 1.0), nproc: int = 1, device: str | None = None,
            out: str | Path | None = "runs", cache_dir: str | Path | None = None, progress: bool | None = None,
            student_kwargs: dict[str, Any] | None = None, speed: bool = True,
            on_step: Callable[[int], None] | None = None, **recipe_changes: Any) -> PretrainResult:
    """Distil ``teacher`` (one, or several: ``"A,B"`` or a list) into ``student`` on the unlabelled ``data``.

    Args:
        teacher: the teacher backbone(s), frozen and never modified.
        student: any backbone spec: ``random:demo:fmnist-vit`` (random init), ``timm:vit_tiny_patch16_224``...
        data, monitor, recipe, seed, test_fraction, n_resamples, verdict_protocols, nproc, device, out, cache_dir,
        progress, on_step, **recipe_changes: as :func:`vitlab.pretraining.pretrain`.
        crop_scale: random resized crop scale range of the shared view.
        student_kwargs: the student's loader options (timm: ``depth=3``, ``embed_dim=64``...; recorded in the
            artefact so it can be rebuilt).
        speed: measure the student's speed-up over each teacher (``vitlab bench``'s timing code).

    Returns:
        :class:`~vitlab.pretraining.common.PretrainResult` (kind ``distill``).

    Raises:
        ConfigError: teacher and student cannot share an input, a bad setting, a missing optional dependency.
        DataError: too few images for a batch, monitor data without labels.
    """
    from vitlab.pretraining._deps import require_lightly
    from vitlab.pretraining.monitor import monitor_splits
    from vitlab.pretraining.run import finish

    require_lightly("vitlab distill")
    recipe = (recipe or PretrainRecipe()).replace(**recipe_changes) if recipe_changes else (recipe or PretrainRecipe())
    dev = check_settings(nproc=nproc, batch_size=recipe.batch_size, device=device, precision=recipe.precision)
    check_output_dir(out, "--out")
    if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ConfigError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {crop_scale!r}.")
    t_items = [t.strip() for t in teacher.split(",")] if isinstance(teacher, str) else \
        list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    source = load_source(data)
    mon = load_source(monitor) if monitor is not None else None
    if mon is not None:
        monitor_splits(mon, seed, test_fraction, recipe.val_fraction)
    n = check_images(source, recipe.batch_size)
    teachers = {}
    for t in t_items:
        bb_t = load_backbone(t) if isinstance(t, str) else t
        teachers[bb_t.name if bb_t.name not in teachers else f"{bb_t.name}#{len(teachers)}"] = bb_t
    if isinstance(student, str):
        s_bb = load_backbone(student, seed=0, **(student_kwargs or {}))
        load_name = student
    else:
        s_bb, load_name = student, student.name
    random_init = s_bb.name.startswith("random:")
    canvas = check_shared_input(s_bb, teachers)
    res_r = recipe.resolved(random_init=random_init)
    total = recipe.total_steps(n)
    warmup = recipe.warmup_steps(total, random_init)
    config = {"teachers": list(teachers), "student": s_bb.name, "student_kwargs": student_kwargs or {},
              "data": source.uri, "monitor": None if mon is None else mon.uri, "method": {
                  "name": "feature-distillation", "loss": "AM-RADIO: cos(summary) + 0.9 cos + 0.1 smooth-L1 (patches)",
                  "crop_scale": list(crop_scale), "canvas": list(canvas)},
              "recipe": {k: v for k, v in recipe.to_dict().items() if k != "checkpoint_minutes"},
              "resolved": {**res_r, "total_steps": total, "head_warmup_steps": warmup, "export": "student"},
              "seed": seed, "test_fraction": test_fraction, "n_resamples": n_resamples,
              "verdict_protocols": verdict_protocols, "device": dev.type}
    record = start_record("distill", config, backbone=s_bb, source=source,
                          fingerprints={"teachers": {k: t.fingerprint() for k, t in teachers.items()},
                                        **({"monitor": data_block(mon)} if mon is not None else {})},
                          seeds={"views": seed, "split": seed, "adaptors": seed, "bootstrap": seed})
    run_dir = Path(out) / "distill" / record.run_id if out is not None else None
    by_name = all(isinstance(t, str) for t in t_items) and isinstance(student, str)
    job = {"backbone": load_name, "pretrained": True, "init_seed": 0, "backbone_kwargs": student_kwargs or {},
           "teachers": list(teachers) if by_name else [], "data": source.uri,
           "monitor": None if mon is None else mon.uri, "build": _build_distill,
           "crop_scale": tuple(crop_scale), "recipe": recipe, "seed": seed, "test_fraction": test_fraction,
           "n_resamples": n_resamples, "total": total, "warmup": warmup, "lr": res_r["lr"],
           "layer_decay": res_r["layer_decay"], "export": "student", "device": str(dev), "run_dir": run_dir,
           "run_id": record.run_id, "progress": progress, "label": "distill", "on_step": on_step,
           "objects": {} if nproc > 1 else {"backbone": s_bb, "source": source, "monitor": mon, "teachers": teachers}}
    loop = run_training(job, nproc)
    others = {("teacher" if len(teachers) == 1 else f"teacher:{k}"): t for k, t in teachers.items()}
    speeds = {}
    result = finish(record, loop, s_bb, load_name, student_kwargs, source, mon, run_dir, kind="distill",
                    models_label="student", reference="start", info={"method": "feature-distillation",
                                                                     "teachers": list(teachers)},
                    seed=seed, test_fraction=test_fraction, n_resamples=n_resamples,
                    verdict_protocols=verdict_protocols, cache_dir=cache_dir, device=str(dev), out=None,
                    nproc=nproc, others=others)
    if speed:
        from vitlab.pretraining.verdict import speed_up

        for label, t in others.items():
            speeds[label] = speed_up(t, result.backbone, device=str(dev))
        result.record.details["speedup"] = speeds
    result.path = result.record.save(out) if out is not None else None
    return result
