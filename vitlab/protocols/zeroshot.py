"""``zeroshot``: CLIP-style zero-shot classification of the test split from class names and prompts.

For a backbone with a text tower (``open_clip:``, HF CLIP / SigLIP): every class name is written
into every prompt template, the text tower embeds the prompts (cached, keyed by the text
weights, templates and class names: :mod:`vitlab.protocols.text_cache`), each class's prompt
embeddings are normalised, averaged and renormalised (CLIP's prompt ensembling:
:func:`~vitlab.protocols.zeroshot_math.zeroshot_weights`), and each test image's joint-space
embedding (the store's ``embed`` pooling) is classified by cosine similarity times the logit
scale. Nothing is trained, so the training split is unused; the result is a classification
result on the same test split as ``knn`` and ``linear``, scored and paired the same way.

Precedence: class names come from ``classnames`` (a file, one name per line, in label order)
when given, else from the data source's classes; templates from ``templates``: a file path >
a named set (``openai``: CLIP's 80 ImageNet templates, the default; ``openai7``; ``simple``).

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Split
    >>> X = np.array([[1.0, 0.1], [0.1, 1.0]]); text = np.eye(2)[:, None, :]  # [classes, templates, D]
    >>> test = Split(X, np.array([0, 1]), np.arange(2), extra={"text_embeddings": text})
    >>> ZeroShot().run(test, test, seed=0, n_classes=2).outputs["proba"].argmax(1).tolist()
    [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.protocols.base import Protocol, Result, Split, check_finite, register_protocol

__all__ = ["ZeroShot", "ZeroShotConfig", "read_classnames"]


@dataclass(frozen=True)
class ZeroShotConfig:
    """``templates``: a named set (openai, openai7, simple) or a file; ``classnames``: an optional file
    (one name per line, in label order) overriding the data's class names; ``scale``: the logit scale."""

    templates: str = "openai"
    classnames: str | None = None
    scale: float = 100.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(f"zeroshot: scale must be a positive number, got {self.scale}; CLIP uses 100.")
        if self.classnames is not None and not Path(self.classnames).is_file():
            raise ConfigError(f"zeroshot: classnames file {self.classnames} does not exist; write one class name "
                              "per line, in label order.")


def read_classnames(path: str, n_classes: int) -> list[str]:
    """Class names from a file, one per line in label order; exactly ``n_classes`` non-empty lines.

    Raises:
        DataError: wrong number of names, naming the file and the counts.
    """
    names = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(names) != n_classes:
        raise DataError(f"{path} lists {len(names)} class name(s) but the data has {n_classes} classes; write one "
                        "name per line, in label order.")
    return names


@register_protocol
class ZeroShot(Protocol):
    """Zero-shot classification with prompt ensembling (CLIP); needs an image–text backbone."""

    name = "zeroshot"
    task = "classification"
    Config = ZeroShotConfig
    view = "embed"
    help = "CLIP-style zero-shot from class names x prompt templates (image-text backbones)"

    def prompts(self, classes: list[str]) -> tuple[list[str], list[str]]:
        """``(class names, templates)`` to embed with the text tower, by the documented precedence."""
        from vitlab.protocols.zeroshot_math import templates

        names = read_classnames(self.config.classnames, len(classes)) if self.config.classnames else list(classes)
        return names, templates(self.config.templates)

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        from vitlab.protocols.zeroshot_math import zeroshot_proba, zeroshot_weights

        check_finite(train, "train")
        check_finite(test, "test")
        text = test.extra.get("text_embeddings")
        if text is None:
            raise ConfigError("zeroshot needs the class-prompt text embeddings (Split.extra['text_embeddings']); "
                              "run it through vitlab.evaluate with an image–text backbone.")
        text = np.asarray(text)
        if text.shape[0] != n_classes:
            raise DataError(f"zeroshot: {text.shape[0]} class text embeddings for {n_classes} classes.")
        proba = zeroshot_proba(test.X, zeroshot_weights(text), self.config.scale)
        ids = [str(i) for i in test.ids] if test.ids is not None else [str(r) for r in test.rows]
        return Result("classification", ids, {"y": test.y, "proba": proba}, test.groups,
                      {"templates": self.config.templates, "n_templates": int(text.shape[1]),
                       "scale": self.config.scale},
                      {"classnames": test.extra.get("classnames"), "train_used": False})
