"""Real int8 inference: int8 weights and (by default) dynamically quantised int8 activations.

Uses torchao when it is importable (``quantize_`` with
``Int8DynamicActivationInt8WeightConfig`` or ``Int8WeightOnlyConfig``), else
``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (CPU only,
dynamic per-tensor activations, per-tensor int8 weights). The backend used is
recorded in the ``accel`` dict, since the two give slightly different numbers.

For simulated low-bit quantisation (W8A8 ... W4A4) see :mod:`vitlab.accel.ptq`.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vitlab.accel.base import Accelerator, accel_names, derive
from vitlab.accel.runner import ReducedBackbone
from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError


def torchao_available() -> bool:
    """Whether torchao can be imported."""
    return importlib.util.find_spec("torchao") is not None


def quantize_int8(model: nn.Module, *, weight_only: bool = False) -> dict[str, str]:
    """Quantise ``model``'s linear layers to int8 IN PLACE; return the backend facts.

    Args:
        model: a module (pass a copy: it is modified).
        weight_only: int8 weights with float activations (torchao only).

    Raises:
        ConfigError: ``weight_only`` without torchao.

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 8))
        >>> quantize_int8(m)["backend"] in ("torchao", "torch.ao")
        True
    """
    if torchao_available():
        import torchao
        from torchao.quantization import quantize_

        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

            cfg = Int8WeightOnlyConfig() if weight_only else Int8DynamicActivationInt8WeightConfig()
        except ImportError:  # torchao < 0.9
            from torchao.quantization import int8_dynamic_activation_int8_weight, int8_weight_only

            cfg = int8_weight_only() if weight_only else int8_dynamic_activation_int8_weight()
        quantize_(model, cfg)
        return {"backend": "torchao", "version": getattr(torchao, "__version__", "unknown")}
    if weight_only:
        raise ConfigError("int8: weight_only=true needs torchao (pip install torchao); without it only dynamic "
                          "int8 activations + int8 weights (torch.ao) are available.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return {"backend": "torch.ao", "engine": str(torch.backends.quantized.engine)}


@dataclass(frozen=True)
class Int8(Accelerator):
    """Real int8 inference of every linear layer.

    Args:
        weight_only: int8 weights only (torchao); default dynamic int8 activations + int8 weights.

    Example:
        >>> Int8().to_dict()
        {'name': 'int8', 'weight_only': False}
    """

    name: ClassVar[str] = "int8"
    weight_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.weight_only, bool):
            raise ConfigError(f"int8: weight_only must be true or false, got {self.weight_only!r}.")

    def supports(self, backbone: Backbone) -> str | None:
        if not any(isinstance(m, nn.Linear) for m in backbone.model.modules()):
            return "its model has no nn.Linear layers to quantise."
        done = accel_names(backbone.accel)
        if any(n in ("int8", "ptq") for n in done) or (isinstance(backbone, ReducedBackbone) and backbone.kernel):
            return f"it is already quantised ({'+'.join(done)})."
        if not torchao_available():
            if backbone.device.type != "cpu":
                return (f"it is on {backbone.device}, and without torchao int8 uses torch.ao dynamic quantisation, "
                        "which runs on CPU only. Move it to CPU or pip install torchao.")
            if self.weight_only:
                return "weight_only=true needs torchao (pip install torchao)."
        return None

    def _build(self, backbone: Backbone, calib: Any) -> tuple[Backbone, dict[str, Any]]:
        model = copy.deepcopy(backbone.model)
        facts = quantize_int8(model, weight_only=self.weight_only)
        return derive(backbone, model), facts


__all__ = ["Int8", "quantize_int8", "torchao_available"]
