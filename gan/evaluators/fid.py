"""FID and KID between generated and real photos: with Inception-v3 weights the user supplies, and in
the feature space of the segmenter the suite trains (`distribution_scores`), which needs no download.

Nothing is downloaded: pass a Keras weights file of
`keras.applications.InceptionV3(include_top=False, pooling="avg")` (e.g.
saved once on a machine that can fetch ImageNet weights:
`InceptionV3(include_top=False, pooling="avg").save_weights("inception_v3.weights.h5")`)
as `--eval.inception_weights`.

- FID (Heusel et al. 2017): ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^1/2) of the 2048-d pool
  features (images resized to 299x299, Inception preprocessing to [-1, 1]).
- KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged over
  random subsets of up to 1,000 images (fixed seed); 0 for identical sets in expectation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import linalg

from gan.errors import UserError
from gan.datasets.pixels import to_unit


class InceptionFeatures:
    def __init__(self, weights: str | Path, image_size: int = 299):
        import keras
        weights = Path(weights)
        if not weights.exists():
            raise UserError(f"--eval.inception_weights {weights}: no such file")
        self.model = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=None,
                                                    input_shape=(image_size, image_size, 3))
        try:
            self.model.load_weights(weights)
        except (ValueError, OSError) as e:
            raise UserError(f"--eval.inception_weights {weights}: not InceptionV3(include_top=False, "
                            f"pooling='avg') weights ({str(e).splitlines()[0][:120]})") from None
        self.size = image_size

    def __call__(self, images: np.ndarray, batch: int = 32) -> np.ndarray:
        import tensorflow as tf
        # Eager calls: tracing this 300-layer graph costs more than the few batches of a test split.
        return np.concatenate([
            self.model(to_unit(tf.image.resize(tf.cast(images[i:i + batch], tf.float32), [self.size, self.size])),
                       training=False).numpy() for i in range(0, len(images), batch)])


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    mu_r, mu_f = real.mean(0), fake.mean(0)
    xc, yc = real - mu_r, fake - mu_f
    n, m = len(real) - 1, len(fake) - 1  # np.cov's normalisation
    return float(max(0.0, ((mu_r - mu_f) ** 2).sum() + (xc ** 2).sum() / n + (yc ** 2).sum() / m
                     - 2 * _trace_sqrt_product(xc, yc, n, m)))


def _trace_sqrt_product(xc: np.ndarray, yc: np.ndarray, n: int, m: int) -> float:
    """Tr((A B)^1/2) for the covariances A = Xc'Xc/n and B = Yc'Yc/m of centred features.

    With fewer images than feature dimensions (a 50-image test split, 2048-d Inception features) A B has
    at most min(n, m) non-zero eigenvalues, those of K K' with K = Xc Yc' / sqrt(n m); their square
    roots are K's singular values, so the trace is K's nuclear norm: exact, and O(n m d) instead of the
    O(d^3) of a d x d matrix root. Otherwise the d x d route: the eigenvalues of the symmetric
    A^1/2 B A^1/2 (same spectrum as A B), free of scipy.linalg.sqrtm's complex round-off."""
    d = xc.shape[1]
    if min(len(xc), len(yc)) < d:
        return float(linalg.svdvals(xc @ yc.T / np.sqrt(n * m)).sum())
    w, v = linalg.eigh(xc.T @ xc / n)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    prod = root_a @ (yc.T @ yc / m) @ root_a
    return float(np.sqrt(np.clip(linalg.eigvalsh((prod + prod.T) / 2), 0, None)).sum())


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> float:
    real, fake = real.astype(np.float64), fake.astype(np.float64)  # (x.y/d + 1)^3 ~ 1: float32 cancels
    d = real.shape[1]
    m = min(len(real), len(fake), subset_size)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        values.append((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                      - 2 * k_xy.mean())
    return float(np.mean(values))


def distribution_scores(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Fréchet distance and KID between real and generated test photos' features, beside their floor: the
    same scores between the two halves of the real photos. The Fréchet distance compares the first half
    of the real photos with the generated photos of the second half, so both it and its floor are
    between disjoint sets of n/2 images (the estimator's small-sample bias is the same on both sides);
    KID, unbiased, uses every image."""
    half = len(real) // 2
    if half < 2:
        return {}
    return {"fid": fid(real[:half], fake[half:2 * half]), "fid_floor": fid(real[:half], real[half:2 * half]),
            "kid": kid(real, fake), "kid_floor": kid(real[:half], real[half:2 * half])}
