"""Images in and out of the explorer: an uploaded PNG/JPEG/... as a model input, pictures as PNG bytes.

In: the bytes a browser sends (a drawing on the page's canvas, or a file dropped on it) are
checked before they are decoded (`check_image_header`: the byte count, a known format, the pixel
count from the header, as `vaelab.data.images` does for files), then made to look like the data:

- grey data (C = 1): the grey levels g in [0, 1], inverted when the border is light (ink on
  paper: x = 1 - g), so that the background is 0 as in MNIST;
- framing (`frame="digit"`, the default for grey data): the ink's bounding box scaled to fit
  20/28 of the image and centred by its centre of mass, as MNIST's digits were (LeCun et al.,
  "The MNIST database": "centered in a 28x28 image by computing the center of mass of the
  pixels"); `frame="fit"` scales the whole picture into the frame instead;
- RGB data (C = 3): the picture scaled to H x W.

Out: pictures in [0, 1] as 8-bit PNG, grey ones with the project's inverted grey map (0 white,
1 black), as every figure of vaelab draws them.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image

from vaelab.errors import UserError

Frame = Literal["digit", "fit"]

DIGIT_BOX = 20 / 28
"""The share of the side an MNIST digit's bounding box is scaled to (20 of 28 pixels)."""

INK_THRESHOLD = 0.1
"""Grey levels above this count as ink when finding a drawing's bounding box."""


def png_bytes(image: np.ndarray) -> bytes:
    """A picture in [0, 1], (H, W) grey or (H, W, 3) RGB, as PNG bytes (grey inverted: 1 is black)."""
    values = np.clip(image, 0.0, 1.0)
    if values.ndim == 2:
        values = 1.0 - values
    pixels = np.round(values * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def check_image_header(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open image bytes lazily and check them against the limits before any pixel is decoded."""
    if not data:
        raise UserError("image: the request body is empty; send the image's bytes (PNG, JPEG, ...)")
    if len(data) > max_bytes:
        raise UserError(f"image: {len(data)} bytes, more than max_upload_bytes {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check follows
            image = Image.open(io.BytesIO(data))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"image: not an image Pillow can read ({type(err).__name__})") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise UserError(f"image: {width}x{height} pixels, more than max_upload_pixels {max_pixels}")
    return image


def image_input(
    data: bytes, x_shape: tuple[int, ...], *, max_bytes: int, max_pixels: int, frame: Frame = "digit"
) -> tuple[np.ndarray, bool]:
    """Image bytes -> (C, H, W) float32 in [0, 1] shaped like the data, and whether the grey
    levels were inverted (a light background). See the module docstring."""
    if len(x_shape) != 3 or x_shape[0] not in (1, 3):
        raise UserError(f"image: this run's examples have shape {tuple(x_shape)}, not grey or RGB images")
    channels, height, width = x_shape
    image = check_image_header(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            mode = "L" if channels == 1 else "RGB"
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))  # transparent = paper
                image = Image.alpha_composite(background, image.convert("RGBA"))
            pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as err:  # a truncated or corrupt file past its header
        raise UserError(f"image: the pixels cannot be decoded ({type(err).__name__})") from None
    if channels == 3:
        return _resize(pixels, height, width).transpose(2, 0, 1).copy(), False
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    inverted = bool(border.mean() > 0.5)
    grey = 1.0 - pixels if inverted else pixels
    framed = _frame_digit(grey, height, width) if frame == "digit" else _fit(grey, height, width)
    return framed[None], inverted


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w[, 3]) in [0, 1] -> (height, width[, 3]) by Pillow's area-averaging box filter."""
    mode = "F" if pixels.ndim == 2 else None
    if mode == "F":
        resized = Image.fromarray(pixels.astype(np.float32), "F").resize(
            (width, height), Image.Resampling.BOX
        )
        return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    image = Image.fromarray(np.round(pixels * 255).astype(np.uint8), "RGB")
    return np.asarray(image.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _fit(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole picture scaled into height x width, aspect kept, padded with background 0."""
    h, w = grey.shape
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((height, width), dtype=np.float32)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = _resize(grey, new_h, new_w)
    return out


def _frame_digit(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """MNIST's framing: the ink's bounding box scaled (aspect kept) to DIGIT_BOX of the frame,
    then shifted so its centre of mass sits at the frame's centre. No ink: an empty frame."""
    rows, cols = np.nonzero(grey > INK_THRESHOLD)
    if len(rows) == 0:
        return np.zeros((height, width), dtype=np.float32)
    ink = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = ink.shape
    scale = min(DIGIT_BOX * height / h, DIGIT_BOX * width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    digit = _resize(ink, new_h, new_w)
    mass = digit.sum()
    centre_r = (digit.sum(1) @ np.arange(new_h)) / mass if mass > 0 else (new_h - 1) / 2
    centre_c = (digit.sum(0) @ np.arange(new_w)) / mass if mass > 0 else (new_w - 1) / 2
    top = int(np.clip(round((height - 1) / 2 - centre_r), 0, height - new_h))
    left = int(np.clip(round((width - 1) / 2 - centre_c), 0, width - new_w))
    out = np.zeros((height, width), dtype=np.float32)
    out[top : top + new_h, left : left + new_w] = digit
    return out
