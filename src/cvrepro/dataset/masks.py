"""Segmentation masks: one reader for every place that decodes a mask (snapshot, preprocess,
evaluation, the dataset diff, importers), and the label hash of a mask.

A mask is a single-channel image of class ids (0 = background, `dataset.ignore_index` = not
scored). The project stores 8-bit PNGs (mode L, or P whose palette indices are the ids);
importers also accept 16/32-bit and 1-bit images whose values fit in 0..255 and convert them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cvrepro.core.fileio import CvreproError, sha256_bytes

STORED_MODES = ("L", "P")  # what data/labels holds
CONVERTIBLE_MODES = ("L", "P", "I", "I;16", "1")  # what an importer turns into a stored mask


def decode_mask(data: bytes, where: str | Path, stored: bool = True) -> Any:
    """The mask in `data` as a uint8 HxW array of class ids; CvreproError naming `where` if it is not one.

    stored: only the stored modes (L, P) are accepted; otherwise any convertible mode with values in 0..255."""
    import numpy as np
    from PIL import Image

    modes = STORED_MODES if stored else CONVERTIBLE_MODES
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            array = np.asarray(im) if mode in modes else None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise CvreproError(f"{where}: unreadable or truncated mask ({type(e).__name__}: {e})") from None
    if array is None:
        raise CvreproError(f"{where}: mask must be a single-channel 8-bit PNG (mode L or P), got mode {mode}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise CvreproError(f"{where}: mask values must lie in 0..255, found {int(array.min())}..{int(array.max())}")
    return array.astype(np.uint8, copy=False)


def read_mask(path: Path) -> Any:
    """A stored mask file as a uint8 HxW array of class ids; CvreproError naming the file if it is not one."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CvreproError(f"{path}: mask file not found") from None
    except OSError as e:
        raise CvreproError(f"{path}: cannot read the mask: {e.strerror or e}") from None
    return decode_mask(data, path)


def mask_labels_hash(mask: Any) -> str:
    """The segmentation label hash: sha256 of the decoded pixels (uint8, row-major), so re-encoding
    a PNG is not a label change."""
    import numpy as np

    return sha256_bytes(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())


def mask_png(mask: Any) -> bytes:
    """A mask encoded as the stored 8-bit PNG."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
