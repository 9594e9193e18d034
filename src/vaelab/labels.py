"""Labels end to end: which splits' labels a model that uses them gets, checked once.

A model that uses labels (`uses_labels`: a conditional VAE) scores each batch with its rows'
labels y: (B,) int64 class codes (see `vaelab.models.given_labels`); one that learns from them
without being conditioned on them (`learns_from_labels`: the semi-supervised M2) gets the train
split's, -1 for a row without a label. The trainer gathers them with the same indices as x, on the
device; validation and evaluation pass each batch's labels too. Data without labels are refused
here, in one line, before anything is trained or written.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.config import RunConfig
from vaelab.data import Splits
from vaelab.data.splits import SPLITS
from vaelab.errors import UserError

LABELLED_SOURCES = (
    "mnist5k, digits, mnist, fashion-mnist, folder:DIR with a sub-folder per class, npz with labels"
)
"""Where labelled data come from, for the error that refuses data without labels."""


def split_labels(model, splits: Splits, split: str, where: str) -> Tensor | None:
    """The labels (N,) int64 of `split` for a model that uses labels, None for one that does not;
    a model that uses labels on a split without them is a UserError naming `where` (the data).
    A model that learns from labels without being conditioned on them (`learns_from_labels`: the
    semi-supervised M2, whose classifier predicts them) gets the train split's alone: its
    validation bound and evaluation score log p(x), not log p(x|y)."""
    learns = getattr(model, "learns_from_labels", False)
    if not (getattr(model, "uses_labels", False) or learns) or (learns and split != "train"):
        return None
    labels = splits.labels(split)
    if labels is None:
        raise UserError(
            f"{where}: the model uses labels, but the {split} split of these data has none "
            f"(labelled data: {LABELLED_SOURCES})"
        )
    return labels


def resolve_classes(config: RunConfig, splits: Splits) -> RunConfig:
    """`config` with a conditional model's classes (`model.classes`) resolved from the data, so the
    run stores them and loads without the data: the data's class names (a folder's sub-folders),
    else the codes 0..C-1 as names, C = the largest label + 1. Classes given in the config must be
    as many as the data's. A config without `condition label` (or `kind m2`) is returned as it is."""
    model = config.model
    if model.condition == "none" and model.kind != "m2":
        return config
    setting = "model.condition label" if model.condition == "label" else "model.kind m2"
    where = config.data.source
    found = [splits.labels(split) for split in SPLITS]
    missing = [split for split, labels in zip(SPLITS, found, strict=True) if labels is None]
    if missing:
        raise UserError(
            f"{where}: {setting} needs every example's label; the {', '.join(missing)} "
            f"split{'s have' if len(missing) > 1 else ' has'} none (labelled data: {LABELLED_SOURCES})"
        )
    largest = max(int(labels.max()) for labels in found if labels is not None and len(labels))
    names = splits.label_names or tuple(str(code) for code in range(largest + 1))
    if len(names) < 2:
        raise UserError(f"{where}: {setting} needs at least two classes; these data have one")
    if model.classes is None:
        return config.replace(model={"classes": names})
    if len(model.classes) != len(names):
        raise UserError(
            f"{where}: model.classes names {len(model.classes)} classes; these data have {len(names)}"
        )
    return config


def label_code(classes: tuple[str, ...], label: str | int) -> int:
    """The code of `label`, a class name of `classes` (names first) or a code 0..C-1 (an int or its
    digits); anything else is a UserError naming the valid ones."""
    if isinstance(label, str) and label in classes:
        return classes.index(label)
    text = str(label).strip()
    if text.isascii() and text.isdigit() and int(text) < len(classes):  # (no sign, no other digits)
        return int(text)
    raise UserError(f"label {label!r} is not a class of this model; its classes: {describe_classes(classes)}")


def describe_classes(classes: tuple[str, ...], most: int = 30) -> str:
    """'0, 1, ..., 9' for classes named by their codes, else 'code name' pairs ('0 T-shirt, 1 trouser')."""
    if classes == tuple(str(code) for code in range(len(classes))):
        shown = list(classes)
    else:
        shown = [f"{code} {name}" for code, name in enumerate(classes)]
    return ", ".join(shown[:most]) + (f", ... ({len(classes)} in all)" if len(shown) > most else "")


def for_label(model, label: str | int | None, n: int):
    """The protocol model that decodes n prior samples: `model` itself for label None, or
    `model.given(y)` with y = the code of `label` (a class name or code, `label_code`) for every
    row. A label for a model that does not use labels, or none for a conditional model, is a
    UserError (the latter naming its classes)."""
    classes: tuple[str, ...] | None = getattr(getattr(model, "config", None), "classes", None)
    if label is None:
        if getattr(model, "uses_labels", False) and classes is not None:
            raise UserError(
                f"a conditional model samples given a class label; its classes: {describe_classes(classes)}"
            )
        return model
    if not getattr(model, "uses_labels", False) or classes is None:
        raise UserError(
            f"label {label!r}: the model is not conditional (model.condition none) and takes no label"
        )
    code = label_code(classes, label)
    device = next(iter(model.parameters())).device
    return model.given(torch.full((n,), code, dtype=torch.int64, device=device))
