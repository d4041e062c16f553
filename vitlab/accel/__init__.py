"""Training-free accelerators: token merging, token pruning, quantisation, early exit.

Every accelerator returns a NEW backbone (the user's model is deep-copied, never
modified) whose ``accel`` dict (name + every parameter) enters the embedding
cache key.

=============  ===================================================================
``none``       the baseline (an unchanged copy)
``tome``       token merging (ToMe): ``tome:r=8``, ``tome:r=13,schedule=decrease``
``evit``       attentive token pruning (EViT): ``evit:keep=0.7``
``int8``       real int8 CPU inference (torchao when installed, else torch.ao dynamic)
``ptq``        simulated post-training quantisation, RepQ-ViT style: ``ptq:w_bits=8,a_bits=8``
``w8a8``       ``ptq`` with 8-bit weights and activations (also ``w6a6``, ``w4a4``)
=============  ===================================================================

Example:
    >>> from vitlab.accel import parse_accel
    >>> [a.to_dict()["name"] for a in parse_accel("none,tome:r=8,evit:keep=0.7,int8,w8a8")]
    ['none', 'tome', 'evit', 'int8', 'ptq']
"""

from __future__ import annotations

from vitlab.accel.base import (ACCELERATORS, Accelerator, Chain, NoAccel, apply_accel, parse_accel)

ACCELERATORS.register("none", "vitlab.accel.base:NoAccel", help="none  (the unaccelerated baseline)")
ACCELERATORS.register("tome", "vitlab.accel.tome:ToMe", help="tome:r=8[,schedule=decrease][,prop_attn=false]")
ACCELERATORS.register("evit", "vitlab.accel.evit:EViT", help="evit:keep=0.7[,layers=[3,6,9]][,fuse=sum]")
ACCELERATORS.register("int8", "vitlab.accel.quant:Int8", help="int8[:weight_only=true]  (real int8 CPU inference)")
ACCELERATORS.register("ptq", "vitlab.accel.ptq:PTQ", help="ptq:w_bits=8,a_bits=8  (simulated RepQ-ViT-style PTQ)")
for _bits in (8, 6, 4):
    ACCELERATORS.register(f"w{_bits}a{_bits}", f"vitlab.accel.ptq:w{_bits}a{_bits}",
                          help=f"w{_bits}a{_bits}  (= ptq:w_bits={_bits},a_bits={_bits})")


def __getattr__(name: str):  # lazy public names, so `import vitlab.accel` stays light
    lazy = {
        "ToMe": "vitlab.accel.tome", "bipartite_soft_matching": "vitlab.accel.tome", "merge_wavg": "vitlab.accel.tome",
        "EViT": "vitlab.accel.evit", "evit_prune": "vitlab.accel.evit",
        "Int8": "vitlab.accel.quant", "PTQ": "vitlab.accel.ptq", "feature_cosine": "vitlab.accel.compare",
        "ReducedBackbone": "vitlab.accel.runner", "ReducedTokens": "vitlab.accel.tokens",
        "unmerge_tokens": "vitlab.accel.tokens", "fit_exit_heads": "vitlab.accel.early_exit",
        "exit_probabilities": "vitlab.accel.early_exit", "threshold_sweep": "vitlab.accel.early_exit",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'vitlab.accel' has no attribute {name!r}")


__all__ = ["ACCELERATORS", "Accelerator", "Chain", "NoAccel", "apply_accel", "parse_accel", "ToMe", "EViT", "Int8",
           "PTQ", "feature_cosine", "bipartite_soft_matching", "merge_wavg", "evit_prune", "ReducedBackbone",
           "ReducedTokens", "unmerge_tokens", "fit_exit_heads", "exit_probabilities", "threshold_sweep"]
