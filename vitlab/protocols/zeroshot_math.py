"""Zero-shot classification math for image–text backbones (CLIP, SigLIP): pure functions.

The classifier is CLIP's prompt ensemble: every class name is written into each
prompt template, the text embeddings are L2-normalised, averaged over the templates
and renormalised, giving one unit vector per class (the columns of ``W [D, n_cls]``).
Images are scored by the cosine similarity of their normalised embedding with each
column, times a logit scale (CLIP's learned temperature is 100).

Example:
    >>> import numpy as np
    >>> prompts = class_prompts(["cat", "dog"], templates("simple"))
    >>> prompts
    [['a photo of a cat.'], ['a photo of a dog.']]
    >>> text = np.array([[[1.0, 0.0]], [[0.0, 2.0]]])  # [n_cls=2, n_tmpl=1, D=2]
    >>> W = zeroshot_weights(text)
    >>> [round(float(v), 3) for v in zeroshot_logits(np.array([[3.0, 1.0]]), W, scale=1.0)[0]]
    [0.949, 0.316]
    >>> zeroshot_proba(np.array([[3.0, 1.0]]), W).argmax(1).tolist()
    [0]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError, UnknownNameError

__all__ = ["TEMPLATE_SETS", "DEFAULT_TEMPLATES", "templates", "read_templates", "class_prompts",
           "zeroshot_weights", "zeroshot_logits", "zeroshot_proba"]

# The 80 ImageNet prompt templates of the CLIP paper (Radford et al. 2021, prompt engineering notebook),
# in their published order.
_OPENAI = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
# The 7-template subset the CLIP notebook selected from the 80 (as open_clip's SIMPLE_IMAGENET_TEMPLATES).
_OPENAI7 = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
            "a {} in a video game.", "art of the {}.", "a photo of the small {}.")

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "openai": _OPENAI,  # 80 templates
    "openai7": _OPENAI7,  # 7 templates
    "simple": ("a photo of a {}.",),  # 1 template
}
DEFAULT_TEMPLATES = "openai"
_SLOT = "{}"


def read_templates(path: str | os.PathLike) -> list[str]:
    """Read prompt templates from a text file: one per line, each with a ``{}`` for the class name.

    Blank lines and lines starting with ``#`` are skipped; surrounding whitespace is stripped.

    Raises:
        DataError: the file cannot be read, has no template, or a line has no ``{}``.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "t.txt"
        >>> _ = p.write_text("# mine\\na photo of a {}.\\n\\na sketch of a {}.\\n")
        >>> read_templates(p)
        ['a photo of a {}.', 'a sketch of a {}.']
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read prompt templates from {p} ({type(e).__name__}: {e}); pass a UTF-8 text "
                        "file with one template per line, e.g. 'a photo of a {}.'.") from e
    out = []
    for i, line in enumerate(lines, 1):
        t = line.strip()
        if not t or t.startswith("#"):
            continue
        if _SLOT not in t:
            raise DataError(f"{p}, line {i}: template {t!r} has no '{{}}' for the class name; write it as "
                            "e.g. 'a photo of a {}.'.")
        out.append(t)
    if not out:
        raise DataError(f"{p} holds no prompt template; write one per line, each with '{{}}' for the class name.")
    return out


def templates(name: str | None = None, *, file: str | os.PathLike | None = None) -> list[str]:
    """Prompt templates, by precedence: an explicit ``file`` > a named set ``name`` > the default ``"openai"``.

    Named sets (:data:`TEMPLATE_SETS`): ``"openai"`` (CLIP's 80 ImageNet templates, the default),
    ``"openai7"`` (the 7 of them the CLIP notebook selected), ``"simple"`` (``"a photo of a {}."``).
    ``name`` may also be the path of an existing template file (see :func:`read_templates`).

    Raises:
        UnknownNameError: ``name`` is neither a set nor an existing file.
        DataError: the template file is unreadable or malformed.

    Example:
        >>> len(templates()), len(templates("openai7")), templates("simple")
        (80, 7, ['a photo of a {}.'])
    """
    if file is not None:
        return read_templates(file)
    if name is None:
        name = DEFAULT_TEMPLATES
    if name in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[name])
    if os.path.isfile(name):
        return read_templates(name)
    raise UnknownNameError("prompt template set", name, TEMPLATE_SETS,
                           "Or pass a text file with one template per line, each with '{}' for the class name.")


def class_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Prompts ``[n_cls][n_tmpl]``: each template with every ``{}`` replaced by the class name.

    Raises:
        ConfigError: no class names or templates, or a template without ``{}``.

    Example:
        >>> class_prompts(["red fox"], ["a photo of a {}.", "art of the {}."])
        [['a photo of a red fox.', 'art of the red fox.']]
    """
    if isinstance(classnames, str) or isinstance(templates, str):
        raise ConfigError("class_prompts takes a list of class names and a list of templates, not a single string.")
    if not len(classnames) or not len(templates):
        raise ConfigError(f"zero-shot prompts need at least one class name and one template; got "
                          f"{len(classnames)} class names and {len(templates)} templates.")
    bad = [t for t in templates if _SLOT not in t]
    if bad:
        raise ConfigError(f"template {bad[0]!r} has no '{{}}' for the class name; write it as e.g. 'a photo of a {{}}.'.")
    return [[t.replace(_SLOT, str(c)) for t in templates] for c in classnames]


def _as_array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{what} holds NaN or inf values; check the backbone's outputs (e.g. fp16 overflow).")
    return a


def _normalise(a: np.ndarray, axis: int, what: str) -> np.ndarray:
    n = np.linalg.norm(a, axis=axis, keepdims=True)
    if (n == 0).any():
        raise DataError(f"{what} contains an all-zero embedding, which has no direction; check the backbone's outputs.")
    return a / n


def zeroshot_weights(text_emb: Any) -> np.ndarray:
    """Zero-shot classifier ``W [D, n_cls]`` from prompt embeddings ``[n_cls, n_tmpl, D]``.

    Each prompt embedding is L2-normalised, the class's templates are averaged, and the mean is
    renormalised (CLIP's prompt ensembling; open_clip's ``build_zero_shot_classifier``).

    Raises:
        DataError: not 3-D, empty, non-finite, or a zero embedding.

    Example:
        >>> W = zeroshot_weights(np.array([[[2.0, 0.0], [0.0, 1.0]]]))
        >>> W.round(4).tolist()
        [[0.7071], [0.7071]]
    """
    t = _as_array(text_emb, "text embeddings")
    if t.ndim != 3 or 0 in t.shape:
        raise DataError(f"text embeddings must be [n_classes, n_templates, D] and non-empty; got shape {t.shape}.")
    mean = _normalise(t, -1, "text embeddings").mean(axis=1)
    return _normalise(mean, -1, "the template-averaged class embeddings").T


def zeroshot_logits(image_emb: Any, weights: Any, scale: float = 100.0, *, block: int = 65536) -> np.ndarray:
    """Logits ``[n, n_cls]`` = ``scale`` × cosine similarity of the images with each class.

    Args:
        image_emb: image embeddings ``[n, D]`` in the joint space (any norm: they are normalised here).
        weights: classifier ``[D, n_cls]`` from :func:`zeroshot_weights` (columns unit-norm).
        scale: logit scale (CLIP's learned temperature, 100); it changes the probabilities, not the ranking.
        block: rows computed at a time (memory bound only).

    Returns:
        float32 logits ``[n, n_cls]``.

    Raises:
        DataError: shapes do not match, or an image embedding is zero or non-finite.

    Example:
        >>> zeroshot_logits(np.array([[0.0, 5.0]]), np.eye(2), scale=10.0).tolist()
        [[0.0, 10.0]]
    """
    w = _as_array(weights, "zero-shot weights")
    x = _as_array(image_emb, "image embeddings")
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise DataError(f"image embeddings {x.shape} and zero-shot weights {w.shape} must be [n, D] and [D, n_classes] "
                        "with the same D; embed the images with the 'embed' pooling of the same backbone.")
    if not np.isfinite(scale) or scale <= 0:
        raise ConfigError(f"logit scale {scale!r} must be a positive number, e.g. 100.")
    out = np.empty((x.shape[0], w.shape[1]), dtype=np.float32)
    for s in range(0, x.shape[0], max(1, int(block))):
        out[s:s + block] = scale * (_normalise(x[s:s + block], 1, "image embeddings") @ w)
    return out


def zeroshot_proba(image_emb: Any, weights: Any, scale: float = 100.0) -> np.ndarray:
    """Class probabilities ``[n, n_cls]``: the softmax of :func:`zeroshot_logits`.

    Example:
        >>> zeroshot_proba(np.array([[1.0, 1.0]]), np.eye(2)).tolist()
        [[0.5, 0.5]]
    """
    z = zeroshot_logits(image_emb, weights, scale).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
