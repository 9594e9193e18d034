"""One run's latent space as the explorer shows it: coordinates, the map's plane, contours, panels.

Coordinates. Every point the page sends or receives is in the run's prior-standardized
coordinates u = (z - m) / s, where m and s are the prior's mean and standard deviation per
dimension (N(0, I): u = z; a mixture prior: its moments; an AE keeps N(0, I), so u = z). Two runs
side by side decode the same u, each through its own m and s: "the same pointer position" means
the same point in each run's own standardized space.

The latent mapped. The map shows the model's whole z, except for a hierarchical model (a Ladder
VAE of L stochastic layers), whose joint prior has no closed-form density below the top: there it
shows the top layer z_L, whose prior does, and decodes a point of z_L with each lower layer at its
conditional prior mean (`vaelab.explore.layers.TopLayer`). Z below is the mapped latent's size.

The map's plane. An orthonormal basis V (Z, Z) of u-space and an origin o (Z,) give each point
plane coordinates w = V^T (u - o): (w_1, w_2) are the map's axes and w_3..w_Z the page's sliders,
so u = o + V w. Two choices of V:

- dims: two latent dims (i, j) on the axes (by default the two most used, the lower-numbered
  across), the others on sliders, most used first (KL per dim, or Var_x(E_q[z]) for an AE:
  `vaelab.viz.latent.dim_scores`); o = 0, the prior mean;
- pca: the principal axes of the test codes, o their mean; the sliders move along PC3, PC4, ...

The prior's contours are its 2-D marginal on the plane, which is what a projection of the codes
should be compared with: for a component N(mu_k, diag(s_k^2)) in u-space, N(V_2^T (mu_k - o),
V_2^T diag(s_k^2) V_2) with V_2 the first two columns. They are drawn at the highest-density
regions holding 1 - exp(-r^2 / 2) of the mass, r = 1, 2, 3: the 1-, 2- and 3-sigma circles of a
standard 2-D Gaussian (Hyndman 1996, "Computing and graphing highest density regions").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from vaelab.diagnostics import latent_statistics, posterior_means
from vaelab.distributions import PointMass, is_diagonal_normal
from vaelab.errors import UserError
from vaelab.estimators import bits_per_dim, log_px_importance
from vaelab.evaluate import AE_NOTE, PerExampleLogPx, read_per_example_log_px
from vaelab.explore.layers import dim_names, layer_note, map_latent
from vaelab.viz.conditional import (
    check_label,
    class_names,
    conditional_posterior_means,
    given_label,
    is_conditional,
)
from vaelab.viz.images import as_images, prior_samples, sample_title, tile
from vaelab.viz.latent import class_palette, dim_scores, interpolate
from vaelab.viz.run import Run

Plane = Literal["dims", "pca"]

SIGMA_LEVELS = (1.0, 2.0, 3.0)
"""Contour radii r: the highest-density regions of 1 - exp(-r^2/2) of the mass (39%, 86%, 99%)."""

CONTOUR_GRID = 121
"""Points per axis of the grid on which the prior's marginal density is contoured."""

HDR_SAMPLES = 20_000
"""Draws from the plane's marginal that place the contour levels (Hyndman's quantile method)."""

COORDINATE_HEADROOM = 10.0
"""Accepted coordinates: |u_d| up to this many times the larger of 3 and the codes' largest |u_d|."""

NO_PRIOR_SAMPLES = (
    "an autoencoder has no prior to sample: its codes were never pulled towards N(0, I), so "
    "decoding z ~ N(0, I) shows what an unregularized code space does, not what the model generates"
)


@dataclass(frozen=True)
class PlaneBasis:
    """u = origin + basis @ w; axis_names: (Z,) what each w_d is called on the page."""

    kind: Plane
    basis: np.ndarray  # (Z, Z) orthonormal columns
    origin: np.ndarray  # (Z,)
    axis_names: tuple[str, ...]
    explained: tuple[float, ...] | None  # pca: each axis's share of the codes' variance


@dataclass(frozen=True)
class Encoding:
    """What the page shows of one input x (1, *x_shape).

    u: (Z,) E_q[z|x] of the mapped latent (z_L for a hierarchical model) standardized; w: (Z,) in
    plane coordinates; ellipses: the 1- and 2-sigma ellipses of q(z|x) projected on the plane
    (lists of (w1, w2) points), empty for an AE; input_image / reconstruction: x and E[x | z] at the
    posterior's code of every layer (`q_z_given_x.mean`); decoded_code: for a hierarchical model,
    what the map decodes at u (E[x | z_L = E_q[z_L|x]], lower layers at their conditional prior
    means), None where the map's latent is the whole z; log_px, stderr: the importance-
    sampled log p(x) in nats (None for an AE, `note` says why), bpd its bits per dimension;
    percentile: the share of test examples whose stored log p(x) is lower (None without them).
    """

    u: list[float]
    w: list[float]
    ellipses: list[list[list[float]]]
    input_image: np.ndarray
    reconstruction: np.ndarray
    decoded_code: np.ndarray | None
    log_px: float | None
    log_px_stderr: float | None
    nll_bpd: float | None
    k: int | None
    percentile: float | None
    note: str | None


class LatentSpace:
    """A run loaded for exploring: its model, test codes, standardization and panels.

    Built once at start-up; every method after that is a pure function of its arguments and the
    loaded run (no file is read or written), so the server may call them from worker threads.
    """

    def __init__(self, run: Run, *, k: int = 1000, seed: int = 0) -> None:
        if run.config.model.kind == "m2":
            raise UserError(
                f"{run.dir}: model.kind m2: its latent is a label and a code (onehot y, z), with no "
                "continuous space to map; look at it with vaelab plot, sample and evaluate"
            )
        self.run = run
        self.model = run.model  # the whole model: log p(x), prior samples, reconstructions
        # the model over the mapped latent: the run's model, or a hierarchical model's top layer
        self.latent_model = map_latent(run.model)
        self.layer_note = layer_note(run.model)
        self.k, self.seed = k, seed
        self.latent_dim: int = self.latent_model.latent_dim
        self.dim_names = dim_names(self.latent_model)
        self.x_shape: tuple[int, ...] = tuple(run.model.x_shape)
        self.num_dims = math.prod(self.x_shape)
        self.deterministic = run.deterministic
        self.conditional = is_conditional(self.model)
        if self.conditional and run.labels is None:
            raise UserError(f"{run.dir}: a model conditional on a label needs the {run.split} split's labels")
        loc, scale = prior_moments(self.latent_model.prior())
        self.prior_loc, self.prior_scale = loc, scale  # (Z,) each, float32
        with torch.no_grad():
            if self.conditional:  # q(z|x, y) at each example's true label
                assert run.labels is not None
                codes = conditional_posterior_means(self.model, run.x, run.labels).double()  # (N, Z)
            else:
                codes = posterior_means(self.latent_model, run.x).double()  # (N, Z)
        self.u_codes = ((codes - loc.double()) / scale.double()).numpy()  # (N, Z)
        self.coordinate_bound = COORDINATE_HEADROOM * max(3.0, float(np.abs(self.u_codes).max(initial=0.0)))
        # how much each mapped dim is used (KL per dim, or the codes' variance): over the top layer's
        # own q(z_L|x) and p(z_L) for a hierarchical model, whose whole-z statistics span every layer
        stats = run.stats if self.latent_model is self.model else latent_statistics(self.latent_model, run.x)
        score, self.score_name = dim_scores(stats)
        self.dim_order = tuple(int(d) for d in np.argsort(-np.asarray(score), kind="stable"))
        self.dim_scores = tuple(float(v) for v in score)
        self.labels = None if run.labels is None else run.labels.numpy().astype(np.int64)
        # every log p(x) shown is of the data as given (the input transform's Jacobian included)
        self.log_det_nats = run.splits.log_det_nats()
        self.test_log_px: PerExampleLogPx | None = (
            None
            if self.deterministic
            else read_per_example_log_px(run.dir, run.split, len(run.x), log_det_nats=self.log_det_nats)
        )

    # ----------------------------------------------------------------------------- coordinates

    def to_z(self, u: Tensor) -> Tensor:
        """z = m + s * u for u: (..., Z)."""
        return self.prior_loc + self.prior_scale * u

    def check_label(self, label: int | None) -> int | None:
        """A label the client sent: one of 0..K-1 for a conditional run, None for another."""
        return check_label(self.model, label)

    def given(self, label: int | None, size: int = 1):
        """The protocol model for `size` rows of `label` (a checked one): q(z|x, y), p(x|z, y) for a
        conditional run, the run's own model otherwise."""
        return given_label(self.model, label, size)

    def mapped(self, label: int | None, size: int = 1):
        """`given`'s model over the mapped latent (`vaelab.explore.layers.map_latent`): for a
        hierarchical run its top layer, q(z_L|x), p(z_L) and p(x | z_L, lower layers at their
        conditional prior means)."""
        return map_latent(self.given(label, size))

    def check_u(self, values: list[float], what: str = "z") -> Tensor:
        """A point the client sent, as a (Z,) tensor: Z finite numbers within the coordinate bound."""
        if len(values) != self.latent_dim:
            raise UserError(f"{what}: {len(values)} numbers, this run's latent has {self.latent_dim}")
        u = torch.tensor(values, dtype=torch.float64)
        if not torch.isfinite(u).all():
            raise UserError(f"{what}: every coordinate must be a finite number")
        if float(u.abs().max()) > self.coordinate_bound:
            raise UserError(f"{what}: coordinates must lie within ±{self.coordinate_bound:.4g} prior s.d.")
        return u.float()

    def plane(self, kind: Plane = "dims", dims: tuple[int, int] | None = None) -> PlaneBasis:
        """The map's plane (module docstring). dims: 0-based, default the two most used."""
        z_dim = self.latent_dim
        if kind == "pca":
            if z_dim < 2:
                raise UserError("a PCA plane needs a latent of at least 2 dims")
            origin = self.u_codes.mean(0)
            centred = self.u_codes - origin
            _, singular, vt = np.linalg.svd(centred, full_matrices=True)
            variance = np.zeros(z_dim)
            variance[: len(singular)] = singular**2
            share = variance / variance.sum() if variance.sum() > 0 else variance
            names = tuple(f"PC{i + 1}" for i in range(z_dim))
            return PlaneBasis("pca", vt.T.copy(), origin, names, tuple(float(s) for s in share))
        first = dims if dims is not None else tuple(sorted(self.dim_order[:2]))  # z_i across, z_j up, i < j
        if len(set(first)) != len(first) or not all(0 <= d < z_dim for d in first):
            raise UserError(
                f"dims: need two different latent dims of {self.dim_names[0]}..{self.dim_names[-1]}"
            )
        order = list(first) + [d for d in self.dim_order if d not in first]
        basis = np.eye(z_dim)[:, order]
        return PlaneBasis("dims", basis, np.zeros(z_dim), tuple(self.dim_names[d] for d in order), None)

    def plane_coordinates(self, plane: PlaneBasis, u: np.ndarray) -> np.ndarray:
        """w = V^T (u - o): (..., Z) -> (..., Z)."""
        return (u - plane.origin) @ plane.basis

    # ------------------------------------------------------------------------------------- map

    def latent_map(self, plane: PlaneBasis) -> dict[str, Any]:
        """The map's data as JSON-ready values: codes in plane coordinates (rounded to 1e-4),
        labels and colours, the prior's contours, the view box and the sliders' ranges."""
        w = self.plane_coordinates(plane, self.u_codes)  # (N, Z)
        shown = w[:, :2] if self.latent_dim >= 2 else np.stack([w[:, 0], np.zeros(len(w))], 1)
        classes: list[int] = [] if self.labels is None else sorted(set(self.labels.tolist()))
        palette = class_palette(max(1, len(classes)))
        colours = ["#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3]) for rgba in palette]
        contours, box = self.prior_contours(plane, shown)
        spread = np.abs(w).max(0) if len(w) else np.zeros(self.latent_dim)
        sliders = [
            {"name": plane.axis_names[d], "max": round(float(max(3.0, 1.2 * spread[d])), 3)}
            for d in range(2, self.latent_dim)
        ]
        return {
            "plane": plane.kind,
            "axis_names": list(plane.axis_names),
            "explained": None if plane.explained is None else [round(v, 4) for v in plane.explained],
            "basis": np.round(plane.basis, 8).tolist(),
            "origin": np.round(plane.origin, 8).tolist(),
            "points": np.round(shown, 4).tolist(),
            "labels": None if self.labels is None else self.labels.tolist(),
            "classes": classes,
            "class_names": self.class_names(classes),
            "class_colours": colours,
            "contours": contours,
            "box": box,
            "sliders": sliders,
        }

    def class_names(self, classes: list[int]) -> list[str]:
        names = self.run.splits.label_names
        return [str(names[c]) if names is not None and c < len(names) else str(c) for c in classes]

    def prior_components(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prior in u-space as mixture weights (K,), means (K, Z) and s.d.s (K, Z)."""
        p_z = self.latent_model.prior()
        loc, scale = self.prior_loc.double().numpy(), self.prior_scale.double().numpy()
        if is_diagonal_normal(p_z):
            means = p_z.base_dist.loc.detach().double().numpy()[None]
            sds = p_z.base_dist.scale.detach().double().numpy()[None]
            weights = np.ones(1)
        else:  # a DiagonalGaussianMixture (MixtureSameFamily of diagonal Gaussians)
            components = p_z.component_distribution.base_dist
            means = components.loc.detach().double().numpy()
            sds = components.scale.detach().double().numpy()
            weights = p_z.mixture_distribution.probs.detach().double().numpy()
        return weights, (means - loc) / scale, sds / scale

    def prior_contours(
        self, plane: PlaneBasis, shown: np.ndarray
    ) -> tuple[list[dict[str, Any]], list[float]]:
        """The prior's marginal on the plane, contoured at `SIGMA_LEVELS`, and a square view box
        [w1min, w1max, w2min, w2max] holding the contours and 99.5% of the codes."""
        import contourpy

        if self.latent_dim < 2:  # one dim: no plane to contour; the codes lie on the w1 axis
            half = float(max(3.0, np.abs(shown).max(initial=0.0)) * 1.08)
            return [], [-half, half, -half, half]
        weights, means, sds = self.prior_components()
        v2 = plane.basis[:, :2]
        centres = (means - plane.origin) @ v2  # (K, 2)
        covariances = np.einsum("zi,kz,zj->kij", v2, sds**2, v2)  # (K, 2, 2)
        rng = np.random.default_rng(0)
        which = rng.choice(len(weights), size=HDR_SAMPLES, p=weights / weights.sum())
        noise = rng.standard_normal((HDR_SAMPLES, 2))
        draws = centres[which] + np.einsum("nij,nj->ni", np.linalg.cholesky(covariances)[which], noise)
        density_at_draws = _mixture_density(draws, weights, centres, covariances)
        # the region {p >= c} holds mass m when c is the (1 - m)-quantile of p at draws from p
        levels = [float(np.quantile(density_at_draws, math.exp(-(r**2) / 2))) for r in SIGMA_LEVELS]
        codes = float(np.quantile(np.abs(shown), 0.995)) if len(shown) else 0.0  # a few outliers stay out
        half = float(max(np.quantile(np.abs(draws), 0.999), codes, 1.0) * 1.08)
        box = [-half, half, -half, half]
        grid = np.linspace(-half, half, CONTOUR_GRID)
        g1, g2 = np.meshgrid(grid, grid)
        density = _mixture_density(np.stack([g1.ravel(), g2.ravel()], 1), weights, centres, covariances)
        generator = contourpy.contour_generator(g1, g2, density.reshape(g1.shape))
        contours = []
        for r, level in zip(SIGMA_LEVELS, levels, strict=True):
            lines = [np.round(np.asarray(line), 4).tolist() for line in generator.lines(level)]
            contours.append({"sigma": r, "mass": round(1 - math.exp(-(r**2) / 2), 4), "lines": lines})
        return contours, [round(v, 4) for v in box]

    def model_input(self, image: np.ndarray) -> Tensor:
        """A picture (C, H, W) in [0, 1] as the model takes it: stored as the data are (8-bit
        levels for uint8 data), then the run's transform with its evaluation draw
        (`Splits.inputs`), and binarized by a fixed draw where the run's test split was."""
        stored = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]  # (1, C, H, W)
        if self.run.splits.test.dtype == torch.uint8:
            stored = torch.round(stored * 255).to(torch.uint8)
        x = self.run.splits.transform(stored.reshape(1, *self.x_shape), None)
        if self.run.config.data.binarize != "none":  # the test split is one fixed Bernoulli draw
            x = torch.bernoulli(x.clamp(0, 1), generator=torch.Generator().manual_seed(self.seed))
        return x

    def display(self, x: Tensor) -> np.ndarray:
        """Model inputs (B, *x_shape) as pictures (`display_images`)."""
        return display_images(x, self.x_shape)

    # ------------------------------------------------------------------------------ decoding

    @torch.no_grad()
    def decode(self, u: Tensor, labels: Tensor | None = None) -> np.ndarray:
        """Decoder means E[x|z] (E[x|z, y] for a conditional run, y: (B,) checked labels) at
        z = m + s u for u: (B, Z) -> (B, H, W) or (B, H, W, 3) in [0, 1]; for a hierarchical run z
        is z_L, decoded with the lower layers at their conditional prior means."""
        model = self.latent_model if labels is None else self.model.given(labels)
        x_mean = model.likelihood(self.to_z(u)).mean
        return display_images(x_mean, self.x_shape)

    @torch.no_grad()
    def interpolation(
        self, u_a: Tensor, u_b: Tensor, n: int, method: str, label: int | None = None
    ) -> np.ndarray:
        """Decoder means along the path from u_a to u_b (`vaelab.viz.latent.interpolate` in
        standardized coordinates), tiled as one strip: n cells; a conditional run's under `label`."""
        path = interpolate(u_a, u_b, torch.linspace(0.0, 1.0, n), method)  # (n, Z)
        images = as_images(self.mapped(label, n).likelihood(self.to_z(path)).mean, self.x_shape)
        return tile(images.clamp(0, 1), n, pad=1)

    def prior_samples(self, n: int, seed: int, label: int | None = None) -> tuple[np.ndarray, str]:
        """n decoded prior samples tiled, and their title; an AE has none (`NO_PRIOR_SAMPLES`); a
        conditional run's are decoded under `label`."""
        if self.deterministic:
            raise UserError(NO_PRIOR_SAMPLES)
        x = prior_samples(self.model, n, seed=seed, label=label)
        title = sample_title(self.model, n, "mean", label)
        return tile(as_images(x, self.x_shape).clamp(0, 1), pad=1), title

    # ------------------------------------------------------------------------------ encoding

    @torch.no_grad()
    def encode(self, x: Tensor, plane: PlaneBasis, label: int | None = None) -> Encoding:
        """The encoding panel for one input x: (1, *x_shape) as the model takes it; a conditional
        run's q(z|x, y), p(x|z, y) and log p(x|y) at y = `label` (checked). A hierarchical run's is
        placed at E_q[z_L|x] with q(z_L|x)'s ellipses; its log p(x) and reconstruction are the whole
        model's."""
        model, mapped = self.given(label), self.mapped(label)
        q_z_given_x = model.posterior(x)
        q_mapped = q_z_given_x if mapped is model else mapped.posterior(x)
        u = ((q_mapped.mean[0].double() - self.prior_loc.double()) / self.prior_scale.double()).numpy()
        w = self.plane_coordinates(plane, u)
        ellipses: list[list[list[float]]] = []
        if not isinstance(q_mapped, PointMass) and is_diagonal_normal(q_mapped):
            variance = (q_mapped.base_dist.scale[0].double() / self.prior_scale.double()).square().numpy()
            ellipses = posterior_ellipses(w[:2], plane.basis[:, :2], variance)
        reconstruction = model.likelihood(q_z_given_x.mean).mean
        images = display_images(torch.cat([x, reconstruction]), self.x_shape)
        decoded_code = (
            None
            if mapped is model
            else display_images(mapped.likelihood(q_mapped.mean).mean, self.x_shape)[0]
        )
        log_px = stderr = bpd = percentile = None
        if not self.deterministic:
            generator = torch.Generator().manual_seed(self.seed)
            estimate = log_px_importance(model, x, self.k, generator=generator)
            log_px, stderr = float(estimate.value[0]) + self.log_det_nats, float(estimate.stderr[0])
            bpd = float(bits_per_dim(-log_px, self.num_dims))
            if self.test_log_px is not None:
                percentile = float((self.test_log_px.value < log_px).double().mean())
        return Encoding(
            u=[round(float(v), 6) for v in u],
            w=[round(float(v), 6) for v in w],
            ellipses=ellipses,
            input_image=images[0],
            reconstruction=images[1],
            decoded_code=decoded_code,
            log_px=log_px,
            log_px_stderr=stderr,
            nll_bpd=bpd,
            k=None if self.deterministic else self.k,
            percentile=percentile,
            note=AE_NOTE if self.deterministic else None,
        )

    def test_distribution(self, bins: int = 40) -> dict[str, Any]:
        """The test split's stored per-example log p(x) as a histogram, or why there is none."""
        if self.deterministic:
            return {"note": AE_NOTE}
        if self.test_log_px is None:
            return {
                "note": f"no per-example log p(x) stored for the {self.run.split} split: run "
                f"`vaelab evaluate {self.run.dir}` once to see how typical an input is"
            }
        values = self.test_log_px.value.numpy()
        counts, edges = np.histogram(values, bins=bins)
        return {
            "counts": counts.tolist(),
            "edges": np.round(edges, 4).tolist(),
            "mean": round(float(values.mean()), 4),
            "k": self.test_log_px.k,
            "num_examples": len(values),
        }

    def info(self) -> dict[str, Any]:
        """What the page needs to know about the run before drawing anything."""
        config = self.run.config
        return {
            "name": self.run.dir.name,
            "model": config.model.kind,
            "prior": None if self.deterministic else config.model.prior,
            "latent_dim": self.latent_dim,
            "dim_names": list(self.dim_names),
            "layers": config.model.layers,
            "layer_shown": config.model.layers if self.layer_note is not None else None,
            "layer_note": self.layer_note,
            "x_shape": list(self.x_shape),
            "images": is_image_shape(self.x_shape),
            "num_dims": self.num_dims,
            "deterministic": self.deterministic,
            "coordinate_bound": round(self.coordinate_bound, 3),
            "dim_order": list(self.dim_order),
            "dim_scores": [round(v, 5) for v in self.dim_scores],
            "score_name": self.score_name,
            "num_test": len(self.u_codes),
            "k": None if self.deterministic else self.k,
            "samples_note": NO_PRIOR_SAMPLES if self.deterministic else None,
            "log_px_note": AE_NOTE if self.deterministic else None,
            "test_log_px": self.test_distribution(),
            "classes": list(class_names(self.model)) if self.conditional else None,
        }


def prior_moments(p_z) -> tuple[Tensor, Tensor]:
    """The prior's per-dimension mean and standard deviation (Z,) each, float32, detached."""
    loc, variance = p_z.mean.detach().float(), p_z.variance.detach().float()
    if not (torch.isfinite(loc).all() and torch.isfinite(variance).all() and (variance > 0).all()):
        raise UserError(
            "the model's prior has a non-finite mean or a zero variance; it cannot be standardized"
        )
    return loc, variance.sqrt()


def posterior_ellipses(centre: np.ndarray, v2: np.ndarray, variance: np.ndarray, points: int = 64) -> list:
    """The r = 1, 2 ellipses of N(V_2^T mu, V_2^T diag(variance) V_2), the projection of a diagonal
    Gaussian on the plane: centre + r L (cos t, sin t) with L L^T the 2 x 2 covariance."""
    covariance = v2.T @ np.diag(variance) @ v2  # (2, 2)
    chol = np.linalg.cholesky(covariance + 1e-12 * np.eye(2))
    t = np.linspace(0.0, 2 * math.pi, points)
    circle = np.stack([np.cos(t), np.sin(t)])  # (2, T)
    return [np.round((centre[:, None] + r * chol @ circle).T, 5).tolist() for r in (1.0, 2.0)]


def _mixture_density(points: np.ndarray, weights: np.ndarray, centres: np.ndarray, covariances: np.ndarray):
    """sum_k pi_k N(points; c_k, C_k) for points (P, 2): (P,)."""
    weights = weights / weights.sum()
    inverse = np.linalg.inv(covariances)  # (K, 2, 2)
    norm = 1.0 / (2 * math.pi * np.sqrt(np.linalg.det(covariances)))  # (K,)
    diff = points[:, None, :] - centres[None]  # (P, K, 2)
    mahalanobis = np.einsum("pki,kij,pkj->pk", diff, inverse, diff)
    return (weights * norm * np.exp(-0.5 * mahalanobis)).sum(1)


def is_image_shape(x_shape: tuple[int, ...]) -> bool:
    """Whether examples are images the page can draw and take: (C, H, W), C = 1 (grey) or 3 (RGB)."""
    return len(x_shape) == 3 and x_shape[0] in (1, 3)


def display_images(x: Tensor, x_shape: tuple[int, ...]) -> np.ndarray:
    """Model-space examples (B, *x_shape) as pictures in [0, 1]: (B, H, W) grey or (B, H, W, 3)."""
    images = as_images(x.float(), x_shape).clamp(0, 1).numpy()  # (B, C, H, W)
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
