"""How far an image moved from a reference of the same seed: PSNR and SSIM, on pixels in [0, 1]."""

from __future__ import annotations

import math

import numpy as np


def psnr_db(reference: np.ndarray, image: np.ndarray) -> float | None:
    """Peak signal-to-noise ratio in dB (peak 1.0); ``None`` when the images are identical."""
    mse = float(np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2))
    return None if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(reference: np.ndarray, image: np.ndarray, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004: 11-tap Gaussian window, K1=0.01, K2=0.03, peak 1.0) over the
    channels of images [..., H, W, C] or [H, W] in [0, 1]; 1.0 for identical images."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(image, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} and {y.shape}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = 0.01**2, 0.03**2
    blur = _gaussian_blur(sigma)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def _gaussian_blur(sigma: float):
    radius = 5  # the 11-tap window of the SSIM paper
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()

    def blur(array: np.ndarray) -> np.ndarray:  # separable, over the H and W axes ([..., H, W, C])
        for axis in (-3, -2):
            padded = np.pad(array, [(radius, radius) if a == array.ndim + axis else (0, 0)
                                    for a in range(array.ndim)], mode="reflect")
            array = sum(taps[i] * np.take(padded, range(i, i + array.shape[axis]), axis=axis)
                        for i in range(len(taps)))
        return array

    return blur
