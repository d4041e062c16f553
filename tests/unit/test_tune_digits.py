"""``sample:digits``: scikit-learn's 8 x 8 digits as a source (pixels, labels, fingerprint, limit)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

import vitlab
from vitlab.errors import DataError, UnknownNameError


def test_digits_matches_sklearn():
    src = vitlab.load_source("sample:digits")
    ref = load_digits()
    assert len(src) == 1797 and src.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(src.labels, ref.target)
    img = np.asarray(src.load_image(5).convert("L"))
    np.testing.assert_array_equal(img, np.rint(ref.images[5] * 255 / 16).astype(np.uint8))
    assert src[5].label == int(ref.target[5]) and src[5].id == "digits-0005"


def test_digits_limit_and_fingerprint():
    full, sub = vitlab.load_source("sample:digits"), vitlab.load_source("sample:digits?limit=100")
    assert len(sub) == 100 and sub.uri == "sample:digits?limit=100"
    assert sub.fingerprint != full.fingerprint
    assert vitlab.load_source("sample:digits").fingerprint == full.fingerprint
    with pytest.raises(DataError, match="limit must be >= 1"):
        vitlab.load_source("sample:digits?limit=0")


def test_unknown_sample_suggests_digits():
    with pytest.raises(UnknownNameError, match="digits"):
        vitlab.load_source("sample:digit")
