"""Folders of image files, read with Pillow after every header has been checked.

A first pass opens each file lazily (Pillow reads the header only) to check its size against
limits.max_image_pixels (Pillow's decompression-bomb check, set from the limit for the duration
of the read and turned into a clean error) and against the first image's size, and the folder's
total against limits.max_array_elements; only then are the pixels decoded, into one array
allocated once. A file Pillow cannot read is an error naming it.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vaelab.data.checks import regular_file
from vaelab.errors import UserError
from vaelab.limits import Limits, check_elements, limit_error

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# What Pillow raises on a damaged file, by what it was parsing: OSError (truncated data, a
# broken stream; UnidentifiedImageError is one), SyntaxError (a broken PNG chunk), ValueError (a
# text chunk above Pillow's own limit, a bad palette), EOFError, struct.error and IndexError (a
# short or inconsistent header), zlib.error (a corrupt compressed stream).
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, zlib.error)


def image_paths(root: Path, limits: Limits) -> list[Path]:
    """Image files under `root`, sorted, at most limits.max_images of them; a path with an image
    suffix that is not a regular file (a link to a device, a FIFO) is refused, not skipped."""
    paths = []
    for p in root.rglob("*"):
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.is_dir():
            continue
        paths.append(regular_file(p))
        if len(paths) > limits.max_images:
            raise limit_error(str(root), f"more than {limits.max_images:,} image files", "max_images", limits)
    return sorted(paths)


@contextmanager
def pillow_limits(limits: Limits) -> Iterator[None]:
    """Pillow's pixel limit set from `limits` for the duration, its bomb warning an error (Pillow
    only warns between the limit and twice the limit), its other UserWarnings (an odd palette,
    corrupt EXIF data) silenced: the pixels read are checked here, not by those warnings."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def read_grey_images(paths: list[Path], limits: Limits) -> np.ndarray:
    """The images at `paths` as 8-bit grey levels, uint8 (N, 1, H, W), all of one size."""
    from PIL import Image

    with pillow_limits(limits):
        shape = _size(paths[0], limits)
        for p in paths[1:]:
            if (size := _size(p, limits)) != shape:
                raise UserError(f"{p}: size {size} differs from {paths[0]}'s {shape}")
        check_elements(str(paths[0].parent), (len(paths), 1, *shape), limits, declared_by="the image folder")
        x = np.empty((len(paths), 1, *shape), dtype=np.uint8)
        for i, p in enumerate(paths):
            with _opened(p, limits) as image:
                try:
                    grey = np.asarray(image.convert("L"), dtype=np.uint8)
                except (*PILLOW_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                    raise _image_error(p, err, limits) from None
            if grey.shape != shape:
                raise UserError(f"{p}: decoded size {grey.shape} differs from its header's {shape}")
            x[i, 0] = grey
    return x


def _size(path: Path, limits: Limits) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding its pixels."""
    with _opened(path, limits) as image:
        return image.height, image.width


@contextmanager
def _opened(path: Path, limits: Limits):
    from PIL import Image

    try:
        image = Image.open(path)
    except (*PILLOW_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _image_error(path, err, limits) from None
    with image:
        yield image


def _image_error(path: Path, err: Exception, limits: Limits) -> UserError:
    from PIL import Image

    if isinstance(err, Image.DecompressionBombError | Image.DecompressionBombWarning):
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        what = f"image of {int(pixels[1]):,} pixels" if pixels else "image too large"
        return limit_error(str(path), what, "max_image_pixels", limits)
    return UserError(f"{path}: cannot read image ({str(err).strip() or type(err).__name__})")
