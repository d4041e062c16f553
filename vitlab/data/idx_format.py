"""Reader for the IDX format of MNIST / Fashion-MNIST (gzipped or not).

Own code: the format is 30 lines of spec (http://yann.lecun.com/exdb/mnist/) and
no well-kept library reads it without pulling in a dataset downloader.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from vitlab.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into a numpy array.

    Args:
        path: an ``*-idx3-ubyte`` / ``*-idx1-ubyte`` file, optionally ``.gz``.

    Returns:
        ``[n, 28, 28] uint8`` for image files, ``[n] uint8`` for label files.

    Example:
        >>> import struct
        >>> with gzip.open("t10k-images-idx3-ubyte.gz", "wb") as f:  # 5 blank 28x28 images (magic 0x0803: uint8, 3 dims)
        ...     _ = f.write(struct.pack(">IIII", 0x0803, 5, 28, 28) + bytes(5 * 28 * 28))
        >>> imgs = read_idx("t10k-images-idx3-ubyte.gz")
        >>> imgs.shape, imgs.dtype
        ((5, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e}). Re-download or re-extract it.") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}). "
            "Expected MNIST-style files such as train-images-idx3-ubyte[.gz]."
        )
    dtype = np.dtype(_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header says shape {dims} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes of data (truncated?). Re-download it."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
