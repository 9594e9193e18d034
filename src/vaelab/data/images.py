"""Images: folders of image files read with Pillow, and the channels and size of any images.

Folders. A first pass opens each file lazily (Pillow reads the header only) to check its size
against limits.max_image_pixels (Pillow's decompression-bomb check, set from the limit for the
duration of the read and turned into a clean error), its mode (grey or colour) and, without
`size`, against the first image's size; the folder's total is checked against
limits.max_array_elements; only then are the pixels decoded, into one array allocated once. A file
Pillow cannot read is an error naming it.

Channels. vaelab keeps images as grey (C = 1) or RGB (C = 3), 8-bit levels as uint8:
- `auto` keeps them as stored: a folder is RGB if any image is stored in colour (an RGB, CMYK,
  YCbCr... mode, or a palette with a colour entry; the grey ones are then repeated into three equal
  channels), else grey; an array keeps its channel axis.
- `grey` converts colour by the ITU-R 601-2 luma L = 0.299 R + 0.587 G + 0.114 B (Pillow's
  `convert("L")`, the same integer rounding for 8-bit arrays); `rgb` repeats grey into three
  channels.
- Transparency (an alpha channel: Pillow's LA, RGBA, PA modes or a palette's transparent entry;
  an array's fourth channel) is not modelled. A fully opaque alpha channel is dropped; transparent
  pixels are refused under `auto` (what they should show is the user's choice) and dropped, keeping
  their stored colour, under `grey` or `rgb`.

Size. `size` N resizes every image to N x N with Pillow's bilinear filter (antialiased when
shrinking; a convex combination of pixels, so 8-bit levels stay in 0..255 and [0, 1] data in
[0, 1]): `crop` "center" scales the shorter side to N and keeps the centre of the longer one
(`ImageOps.fit`, the aspect ratio kept), "none" stretches to N x N.
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


GREY = 1
RGB = 3
RGBA = 4
CHANNEL_COUNTS = (GREY, RGB, RGBA)
"""Sizes of a channel axis that vaelab recognises in an array: grey, RGB, RGB + alpha."""
COLOUR_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"}
PALETTE_MODES = {"P", "PA"}
CHANNELS = {"grey": GREY, "rgb": RGB}
OPAQUE = {np.dtype(np.uint8): 255, np.dtype(np.float32): 1.0}
"""The alpha value of a fully opaque pixel, by stored dtype (8-bit levels, or [0, 1] floats)."""


def read_images(
    paths: list[Path], limits: Limits, channels: str = "auto", size: int | None = None, crop: str = "center"
) -> np.ndarray:
    """The images at `paths` as 8-bit levels, uint8 (N, C, H, W): C = 1 (grey) or 3 (RGB) by
    `channels` (auto: RGB if any image is stored in colour), all of the first image's size or,
    with `size`, resized to size x size (`crop` center or none)."""
    from PIL import Image

    with pillow_limits(limits):
        headers = [_header(p, limits) for p in paths]
        c = CHANNELS.get(channels) or (RGB if any(colour for _, colour in headers) else GREY)
        shape = headers[0][0] if size is None else (size, size)
        if size is None:
            for p, (hw, _) in zip(paths[1:], headers[1:], strict=True):
                if hw != shape:
                    raise UserError(
                        f"{p}: size {_wxh(hw)} differs from {paths[0]}'s {_wxh(shape)}; "
                        "set data.image_size to resize every image to one size"
                    )
        check_elements(str(paths[0].parent), (len(paths), c, *shape), limits, declared_by="the image folder")
        x = np.empty((len(paths), c, *shape), dtype=np.uint8)
        for i, (p, (hw, _)) in enumerate(zip(paths, headers, strict=True)):
            with _opened(p, limits) as image:
                try:
                    pixels = _decoded(image, c, channels == "auto", size, crop, p)
                except (*PILLOW_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                    raise _image_error(p, err, limits) from None
            if size is None and pixels.shape[1:] != hw:
                raise UserError(
                    f"{p}: decoded size {_wxh(pixels.shape[1:])} differs from its header's {_wxh(hw)}"
                )
            x[i] = pixels
    return x


def _wxh(hw: tuple[int, ...]) -> str:
    """(height, width) as the 'W x H' in which image sizes are usually written."""
    return f"{hw[1]}x{hw[0]}"


def _decoded(image, c: int, refuse_transparency: bool, size: int | None, crop: str, path: Path) -> np.ndarray:
    """One opened image's pixels as uint8 (c, H, W): alpha checked and dropped, converted to grey
    (Pillow's "L", ITU-R 601-2 luma) or RGB, resized."""
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        image = image.convert("RGBA")
        if refuse_transparency and image.getextrema()[3][0] < OPAQUE[np.dtype(np.uint8)]:
            raise UserError(f"{path}: {TRANSPARENT}")
    image = image.convert("RGB" if c == RGB else "L")
    if size is not None:
        image = _resized(image, size, crop)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if c == GREY else pixels.transpose(2, 0, 1)


TRANSPARENT = (
    "holds transparent pixels, which vaelab does not model; set data.channels to rgb or grey to drop "
    "the alpha channel (transparent pixels keep their stored colour)"
)


def _resized(image, size: int, crop: str):
    from PIL import Image, ImageOps

    if image.size == (size, size):
        return image
    if crop == "center":
        return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _header(path: Path, limits: Limits) -> tuple[tuple[int, int], bool]:
    """((height, width), stored in colour) from the file's header, without decoding its pixels."""
    with _opened(path, limits) as image:
        return (image.height, image.width), _is_colour(image)


def _is_colour(image) -> bool:
    """Whether an opened image stores colour: a colour mode, or a palette with a non-grey entry
    (a palette is read with the header; a grey GIF or PNG is often a palette of greys)."""
    if image.mode in COLOUR_MODES:
        return True
    if image.mode not in PALETTE_MODES or image.palette is None:
        return False
    try:
        rgb = np.frombuffer(image.palette.tobytes(), dtype=np.uint8)
    except PILLOW_ERRORS:  # raw palette data (Pillow has not parsed it yet): decoding will tell
        return True
    if image.palette.mode != "RGB" or len(rgb) % 3:
        return True  # a palette this reader cannot read as RGB: keep whatever colour it holds
    rgb = rgb.reshape(-1, 3)
    return bool((rgb != rgb[:, :1]).any())


# ------------------------------------------------------------------------------------- arrays


def channels_first(x: np.ndarray, where: str) -> np.ndarray:
    """An array of examples in vaelab's layout: images (N, C, H, W), anything else (N, D).

    (N, 784) -> (N, 1, 28, 28) (flattened MNIST); (N, D) otherwise stays as it is (a table);
    (N, H, W) -> (N, 1, H, W); (N, H, W, C) -> (N, C, H, W) and (N, C, H, W) as it is, where the
    channel axis is the one of axes 1 and 3 whose size is 1, 3 or 4 (grey, RGB, RGBA). A shape in
    which both are (images at most 4 pixels wide or high) or neither is, is refused.
    """
    if x.ndim == 2:
        return x.reshape(-1, 1, 28, 28) if x.shape[1] == 784 else x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise UserError(
            f"{where}: expected an array of shape (N, D), (N, H, W), (N, H, W, C) or (N, C, H, W), "
            f"got {x.shape}"
        )
    first, last = x.shape[1] in CHANNEL_COUNTS, x.shape[3] in CHANNEL_COUNTS
    if first and last:
        raise UserError(
            f"{where}: shape {x.shape} is ambiguous: axis 1 ({x.shape[1]}) and axis 3 ({x.shape[3]}) could "
            "each be the channels (1, 3 or 4); images at most 4 pixels on a side are not read as images, "
            "flatten them to (N, D)"
        )
    if last:
        return x.transpose(0, 3, 1, 2)
    if first:
        return x
    raise UserError(
        f"{where}: shape {x.shape} has no channel axis: axis 1 (N, C, H, W) or axis 3 (N, H, W, C) must "
        "hold 1, 3 or 4 channels (grey, RGB, RGB + alpha)"
    )


def conform(
    x: np.ndarray,
    channels: str,
    size: int | None,
    crop: str,
    where: str,
    limits: Limits,
) -> np.ndarray:
    """Images (N, C, H, W), C in {1, 3, 4}, uint8 levels or float32, -> the same dtype with the
    channels `channels` asks for (alpha dropped, see the module's docstring) and, with `size`,
    resized to size x size. Images that need no change are returned as they are (no copy)."""
    n, c, h, w = x.shape
    if c not in CHANNEL_COUNTS:
        raise UserError(f"{where}: images of {c} channels; vaelab reads 1 (grey), 3 (RGB) or 4 (RGB + alpha)")
    c_out = CHANNELS.get(channels) or (RGB if c == RGBA else c)
    h_out, w_out = (h, w) if size is None else (size, size)
    if (c_out, h_out, w_out) != (c, h, w):
        check_elements(where, (n, c_out, h_out, w_out), limits, declared_by="the images converted")
    if c == RGBA:
        alpha = x[:, 3]
        if channels == "auto" and (alpha < OPAQUE.get(x.dtype, 1.0)).any():
            raise UserError(f"{where}: {TRANSPARENT}")
        x = x[:, :3]
    if c_out == GREY and x.shape[1] == RGB:
        x = luma(x)
    elif c_out == RGB and x.shape[1] == GREY:
        x = np.repeat(x, RGB, axis=1)
    if (h_out, w_out) != (h, w):
        x = np.stack([_resized_array(image, h_out, crop) for image in x])
    return x


def luma(x: np.ndarray) -> np.ndarray:
    """RGB (N, 3, H, W) -> grey (N, 1, H, W) by ITU-R 601-2 luma, 0.299 R + 0.587 G + 0.114 B;
    8-bit levels with Pillow's integer arithmetic (weights in 1/65536, rounded), so an array and
    the same image in a folder give the same grey levels."""
    if x.dtype == np.uint8:
        r, g, b = (x[:, i : i + 1].astype(np.uint32) for i in range(3))
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).astype(x.dtype)


def _resized_array(image: np.ndarray, size: int, crop: str) -> np.ndarray:
    """One image (C, H, W) -> (C, size, size), each channel through Pillow (8-bit levels as "L",
    floats as "F")."""
    from PIL import Image

    channels = [
        np.asarray(_resized(Image.fromarray(np.ascontiguousarray(plane)), size, crop), dtype=image.dtype)
        for plane in image
    ]
    return np.stack(channels)


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
