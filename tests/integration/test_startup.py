"""A cache hit is decided without the heavy parts: no timm import, no model built, no scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = """
import json, sys, vitlab
emb = vitlab.embed("demo:fmnist-vit", "sample:fashion-mnist", progress=False)
bb = vitlab.load_backbone("demo:fmnist-vit")
print(json.dumps({"from_cache": emb.from_cache, "shape": list(emb.get().shape), "model_loaded": bb.model_loaded,
                  "modules": sorted(m for m in ("timm", "sklearn", "scipy", "matplotlib", "pandas", "transformers")
                                    if m in sys.modules)}))
"""


def _run(cache_dir) -> dict:
    env = {**os.environ, "VITLAB_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cache_hit_imports_no_model_library_and_builds_no_model(tmp_path):
    cold = _run(tmp_path)
    assert not cold["from_cache"] and cold["shape"] == [2000, 96]
    hit = _run(tmp_path)
    assert hit["from_cache"] and hit["shape"] == [2000, 96]
    assert not hit["model_loaded"]  # the checkpoint's content hash and its remembered spec decided the hit
    assert hit["modules"] == [], hit["modules"]


def test_lazy_entry_points_are_the_functions_whatever_was_imported_first():
    code = ("import vitlab.comparison, vitlab.evaluation, vitlab.generative, vitlab.perf, vitlab; "
            "print(all(callable(getattr(vitlab, n)) and getattr(vitlab, n).__name__ == n "
            "for n in ('evaluate', 'compare', 'gen_eval', 'gen_stats', 'tradeoff', 'bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
