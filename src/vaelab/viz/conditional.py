"""Figures of a model conditional on a label: q(z|x, y), p(x|z, y) (a conditional VAE).

A conditional model (`vaelab.models.ConditionalVAE`) gives the protocol model for fixed labels,
`model.given(y)` with y: (B,) int64; everything here goes through it. Its prior p(z) does not
depend on y, and `model.config.classes` names its labels 0..K-1 (resolved from the data).

- Label swap (the "analogies" of Kingma et al. 2014, Figure 1; Sohn et al. 2015): each example
  x_n is encoded under its own label, z_n = E_q[z | x_n, y_n], and that one z_n is decoded under
  every label c, E[x | z_n, c]. The decoder is told the class, so z need not carry it: along a
  row the style (slant, stroke width) stays and the class changes.
- Class-conditional samples: the same z_1..z_S ~ p(z) decoded under each label, one row per
  class: E[x | z_s, c] (or a draw x ~ p(x | z_s, c)). Columns share z, rows share the class.
- Samples by class (`class_cycle`): z_i ~ p(z) independent, sample i decoded under label
  i mod K, one column per class: the samples figure of a conditional model given no label.

These return `ImageRows` (drawn by `vaelab.viz.draw`); the numbers behind them come from
`swap_decodes` and `class_decodes`, which tests and other pages can use directly.

Every other figure of a run (`vaelab.viz.latent`: scatter, grid, interpolation, traversals) goes
through the two functions here that every conditional figure uses: `encode` (E_q[z|x, y] at each
row's own label y) and `decoder` (the protocol model that decodes under one label), with the
figures' `label` option checked by `check_label`; `code_statistics` measures the codes `encode`
gives (KL per dim, active units). `vaelab compare` goes through the same functions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.config import RunConfig
from vaelab.devices import make_generator, model_device
from vaelab.diagnostics import LatentStatistics, latent_statistics, posterior_means
from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.models import ConditionalVAE
from vaelab.viz.images import PRIOR_NAMES, ImageRows, image_rows

MAX_CLASSES = 20
"""Columns (label swap) or rows (class samples) drawn at most: a picture of 100 classes is unreadable."""

NOT_CONDITIONAL = "its model is not conditional on a label (train with model.condition label)"


def conditional_config(config: RunConfig) -> bool:
    """Whether a run's config builds a model conditional on a label (model.condition label)."""
    return config.model.condition == "label"


def is_conditional(model) -> bool:
    """Whether `model` is conditional on a label: q(z|x, y) and p(x|z, y) through `model.given(y)`."""
    return isinstance(model, ConditionalVAE)


def num_classes(model) -> int:
    """K, the labels 0..K-1 a conditional model was built for."""
    return int(model.num_classes)


def class_names(model) -> tuple[str, ...]:
    """The name of each label 0..K-1 of a conditional model (its config's `classes`)."""
    return tuple(model.config.classes)


def shown_classes(model) -> tuple[int, ...]:
    """The labels a figure draws: 0..K-1, at most `MAX_CLASSES` of them."""
    return tuple(range(min(num_classes(model), MAX_CLASSES)))


def _shown_note(model) -> str:
    """What a title adds when `shown_classes` leaves labels out."""
    shown, total = len(shown_classes(model)), num_classes(model)
    return "" if shown == total else f" (the first {shown} of {total})"


def _labels(label: int | Tensor, size: int, device: torch.device) -> Tensor:
    """y as the model takes it: (size,) int64 on `device`."""
    if isinstance(label, Tensor):
        return label.to(device=device, dtype=torch.int64)
    return torch.full((size,), label, dtype=torch.int64, device=device)


@torch.no_grad()
def conditional_posterior_means(model, x: Tensor, y: Tensor, batch_size: int = 1000) -> Tensor:
    """E_q[z | x, y] for every row: x (N, *x_shape), y (N,) -> (N, Z), on x's device."""
    device = model_device(model)
    means = [
        model.given(_labels(y_chunk, len(y_chunk), device)).posterior(x_chunk.to(device)).mean.to(x.device)
        for x_chunk, y_chunk in zip(x.split(batch_size), y.split(batch_size), strict=True)
    ]
    return torch.cat(means)


@torch.no_grad()
def decode_under(model, z: Tensor, label: int | Tensor, *, mode: str = "mean", generator=None) -> Tensor:
    """E[x | z, y] (mode "mean") or a draw x ~ p(x | z, y) ("sample"): z (B, Z) -> (B, *x_shape),
    on the CPU. label: one label for every row, or (B,) labels."""
    device = model_device(model)
    p_x_given_z_y = model.given(_labels(label, len(z), device)).likelihood(z.to(device))
    if mode == "mean":
        return p_x_given_z_y.mean.cpu()
    if mode == "sample":
        return draw(p_x_given_z_y, (), generator).cpu()
    raise UserError(f"mode {mode!r} is not one of mean, sample")


def check_label(model, label: int | None, what: str = "label") -> int | None:
    """A label a request or an option names, checked against the model: an int of 0..K-1 for a
    conditional model (which needs one), None for any other (which takes none)."""
    if not is_conditional(model):
        if label is not None:
            raise UserError(f"{what}: this run's model is not conditional on a label; send none")
        return None
    if label is None:
        raise UserError(
            f"{what}: this run's model is conditional on a label; give one of 0..{num_classes(model) - 1}"
        )
    if isinstance(label, bool) or not 0 <= label < num_classes(model):
        raise UserError(f"{what}: {label!r} is not a label of this run (0..{num_classes(model) - 1})")
    return label


def given_label(model, label: int | None, size: int):
    """The protocol model (`LatentVariableModel`) for `size` rows of one label: model.given(y) with
    y = (label,) * size for a conditional model (label from `check_label`), else the model itself."""
    if label is None:
        return model
    return model.given(_labels(label, size, model_device(model)))


def encode(model, x: Tensor, y: Tensor | None = None, batch_size: int = 1000) -> Tensor:
    """The codes a figure shows: x (N, *x_shape) -> (N, Z) on x's device. E_q[z | x] for a model
    without labels (y ignored); E_q[z | x, y] at each row's own label y: (N,) for a conditional one,
    which needs them."""
    if not is_conditional(model):
        return posterior_means(model, x, batch_size)
    if y is None:
        raise UserError("a conditional model encodes each image at its own label: these images have none")
    return conditional_posterior_means(model, x, y, batch_size)


def code_statistics(model, x: Tensor, y: Tensor | None = None) -> LatentStatistics:
    """KL per latent dim and the active units over x: (N, *x_shape) (`latent_statistics`): of q(z|x)
    for a model without labels (y ignored), of q(z|x, y) at each row's own label y: (N,) for a
    conditional one, which needs them."""
    if not is_conditional(model):
        return latent_statistics(model, x)
    if y is None:
        raise UserError("a conditional model encodes each image at its own label: these images have none")
    given = model.given(_labels(y, len(y), model_device(model)))
    return latent_statistics(given, x, batch_size=len(x))  # one batch: given's labels are all rows'


def decoder(model, label: int | None):
    """The protocol model whose `likelihood(z)` a figure decodes with: the model itself for a model
    without labels (label None), model.given(y) with y = (label,) for a conditional one (`check_label`),
    which broadcasts that one label over z of any shape (*S, Z), as p(x | z, y) broadcasts y."""
    if label is None and not is_conditional(model):
        return model
    return given_label(model, check_label(model, label), 1)


def label_text(model, label: int | None) -> str:
    """How a title names the label a figure is decoded under: 'y = 7' (its class name), or '' for
    a model without labels."""
    if label is None or not is_conditional(model):
        return ""
    return f"y = {class_names(model)[label]}"


# ------------------------------------------------------------------------------- label swap


def pick_one_per_class(labels: Tensor, n: int, seed: int) -> Tensor:
    """n row indices, seeded: one random row of each class in turn (lowest class first), then
    further random rows once every class has one; (min(n, N),) int64."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    first: dict[int, int] = {}
    for i in order.tolist():
        first.setdefault(int(labels[i]), i)
    picked = [first[c] for c in sorted(first)][:n]
    chosen = set(picked)
    picked += [i for i in order.tolist() if i not in chosen][: n - len(picked)]
    return torch.tensor(picked, dtype=torch.int64)


def swap_decodes(model, x: Tensor, y: Tensor, classes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """z_n = E_q[z | x_n, y_n] and E[x | z_n, c] for each label c of `classes`.

    x: (N, *x_shape), y: (N,) the examples' own labels -> z (N, Z) and x_mean (N, C, *x_shape),
    C = len(classes); x_mean[n, j] decodes the same z_n under label classes[j].
    """
    z = conditional_posterior_means(model, x, y)  # (N, Z)
    x_mean = torch.stack([decode_under(model, z, c) for c in classes], dim=1)  # (N, C, *x_shape)
    return z, x_mean


def label_swap(model, x: Tensor, y: Tensor, *, indices=None, split: str = "test") -> ImageRows:
    """Rows of examples x: (N, *x_shape) with their labels y: (N,): the original, then its
    z = E_q[z|x, y] decoded under every label; rows named by `indices` (row numbers in the split,
    default 0..N-1) and the class, columns by the class names."""
    classes, names = shown_classes(model), class_names(model)
    _, x_mean = swap_decodes(model, x, y, classes)
    rows = [torch.cat([x[n : n + 1].cpu(), x_mean[n]]) for n in range(len(x))]  # each (1 + C, *x_shape)
    where = indices if indices is not None else range(len(x))
    return image_rows(
        rows,
        model.x_shape,
        f"Label swap: each {split} image's z = E_q[z | x, y] under its own label,\n"
        f"decoded as E[x | z, y] under every label{_shown_note(model)}: the style stays, the class changes",
        row_labels=[f"#{int(i)} ({names[int(c)]})" for i, c in zip(where, y, strict=True)],
        column_labels=["original", *(names[c] for c in classes)],
        xlabel="label y the same z is decoded under",
        cell_inches=0.55,
        margin_inches=(1.6, 1.3),
    )


# ------------------------------------------------------------------------- class samples


@torch.no_grad()
def class_decodes(
    model, n: int, classes: tuple[int, ...], *, mode: str = "mean", seed: int = 0
) -> tuple[Tensor, Tensor]:
    """z_1..z_n ~ p(z), shared by every class, and their decodes under each label.

    Returns z (n, Z) and x (C, n, *x_shape): x[j, s] is E[x | z_s, classes[j]] (mode "mean") or a
    draw from p(x | z_s, classes[j]) ("sample").
    """
    if n < 1:
        raise UserError(f"n must be >= 1, got {n}")
    generator = make_generator(model_device(model), seed)
    z = draw(model.prior(), (n,), generator)  # (n, Z): p(z) does not depend on y
    x = torch.stack([decode_under(model, z, c, mode=mode, generator=generator) for c in classes])
    return z.cpu(), x


def class_samples(model, n: int, *, mode: str = "mean", seed: int = 0) -> ImageRows:
    """One row per class: the same n prior samples z ~ p(z) decoded under that row's label."""
    classes, names = shown_classes(model), class_names(model)
    _, x = class_decodes(model, n, classes, mode=mode, seed=seed)
    shown = "the decoder mean E[x | z, y]" if mode == "mean" else "one draw x ~ p(x | z, y)"
    return image_rows(
        list(x),
        model.x_shape,
        f"Class-conditional samples: the same {n} z ~ p(z) in every column,\n"
        f"each row decoded under its label y{_shown_note(model)}, shown as {shown}",
        row_labels=[names[c] for c in classes],
        column_labels=[str(s + 1) for s in range(n)] if n <= 16 else (),
        xlabel="prior sample s (the same z_s down each column)",
        cell_inches=0.55,
        margin_inches=(1.4, 1.3),
    )


# -------------------------------------------------------------------------- samples by class


@torch.no_grad()
def class_cycle_decodes(model, n: int, *, mode: str = "mean", seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """n independent z_i ~ p(z), sample i decoded under label y_i = classes[i mod K] (K shown classes).

    Returns z (n, Z), y (n,) int64 and x (n, *x_shape): E[x | z_i, y_i] (mode "mean") or a draw
    from p(x | z_i, y_i) ("sample"), on the CPU.
    """
    if n < 1:
        raise UserError(f"n must be >= 1, got {n}")
    classes = shown_classes(model)
    generator = make_generator(model_device(model), seed)
    z = draw(model.prior(), (n,), generator)  # (n, Z): p(z) does not depend on y
    y = torch.tensor(classes, dtype=torch.int64)[torch.arange(n) % len(classes)]  # (n,)
    return z.cpu(), y, decode_under(model, z, y, mode=mode, generator=generator)


def cycle_columns(n: int, num_classes: int) -> int:
    """Columns of a picture of n samples whose sample i is of class i mod C: the smallest multiple
    of C that is at least sqrt(n) (at most n), so each column holds one class and the picture stays
    about square (64 samples of 2 classes: 8 columns, not 2 columns of 32)."""
    return min(n, num_classes * math.ceil(math.sqrt(n) / num_classes))


def class_cycle(model, n: int, *, mode: str = "mean", seed: int = 0) -> ImageRows:
    """The samples figure of a conditional model given no label: n prior samples, sample i decoded
    under the i-th label in turn, so that column c holds class c (`class_cycle_decodes`)."""
    classes, names = shown_classes(model), class_names(model)
    _, _, x = class_cycle_decodes(model, n, mode=mode, seed=seed)
    per_row = cycle_columns(n, len(classes))
    rows = [x[start : start + per_row] for start in range(0, n, per_row)]
    shown = "the decoder mean E[x | z, y]" if mode == "mean" else "one draw x ~ p(x | z, y)"
    prior = PRIOR_NAMES.get(getattr(model.config, "prior", "normal"), "p(z)")
    columns = "column y holds class y" if per_row <= len(classes) else "the columns cycle through the classes"
    return image_rows(
        rows,
        model.x_shape,
        f"{n} prior samples z ~ {prior}, each decoded under a label in turn{_shown_note(model)}:\n"
        f"{columns}, shown as {shown}",
        column_labels=[names[classes[j % len(classes)]] for j in range(per_row)],
        xlabel="label y the sample is decoded under",
        cell_inches=0.55,
        margin_inches=(0.6, 1.3),
    )
