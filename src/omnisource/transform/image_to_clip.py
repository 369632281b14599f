"""Web image → pseudo-clip (OmniSource §3.4, Table 8).

Three ways to give a still image the shape of a clip: replicate it (``still``), slide a crop
window across it (``translation``, constant or random speed), or warp it with a chain of
random homographies J_i = H_i(J_{i-1}) whose 3×3 matrices are drawn from a Gaussian N(μ, Σ)
fitted by maximum likelihood on homographies between consecutive frames of real target videos
(``perspective``). Homographies are kept in normalised coordinates ([-1, 1] on both axes) so a
fit on 320×240 videos applies to images of any size.
"""
from __future__ import annotations

import cv2
import numpy as np


def still_clip(image: np.ndarray, num_frames: int) -> np.ndarray:
    """(T, H, W, 3): the image repeated."""
    return np.repeat(image[None], num_frames, axis=0)


def translation_clip(image: np.ndarray, num_frames: int, rng: np.random.Generator, speed: str = "constant",
                     crop: float = 0.8) -> np.ndarray:
    """A crop window of ``crop`` × the image size moving across it, resized back to full size.

    ``constant``: straight line between two random corners of the free area; ``random``: a
    random walk of the same overall extent.
    """
    h, w = image.shape[:2]
    ch, cw = max(1, int(h * crop)), max(1, int(w * crop))
    free = np.array([h - ch, w - cw], dtype=np.float64)
    if speed == "constant":
        start, end = rng.uniform(0, 1, 2) * free, rng.uniform(0, 1, 2) * free
        path = start + np.linspace(0, 1, num_frames)[:, None] * (end - start)
    elif speed == "random":
        steps = rng.normal(0, 1, (num_frames, 2)) * free / max(1, num_frames)
        steps[0] = rng.uniform(0, 1, 2) * free
        path = np.clip(np.cumsum(steps, axis=0), 0, free)
    else:
        raise ValueError(f"translation speed must be 'constant' or 'random', got {speed!r}")
    out = np.empty((num_frames, h, w, 3), dtype=image.dtype)
    for t, (y, x) in enumerate(path.astype(int)):
        out[t] = cv2.resize(image[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def _to_pixels(size_hw: tuple[int, int]) -> np.ndarray:
    """S: normalised [-1, 1] coordinates -> pixel coordinates."""
    h, w = size_hw
    return np.array([[(w - 1) / 2, 0, (w - 1) / 2], [0, (h - 1) / 2, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


def normalise_homography(h_pix: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    s = _to_pixels(size_hw)
    h = np.linalg.inv(s) @ h_pix @ s
    return h / h[2, 2]


def pixel_homography(h_norm: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    s = _to_pixels(size_hw)
    h = s @ h_norm @ np.linalg.inv(s)
    return h / h[2, 2]


def estimate_homographies(frames: np.ndarray, max_features: int = 500, min_matches: int = 12) -> np.ndarray:
    """Normalised homographies (K, 3, 3) between consecutive frames (ORB + RANSAC); pairs with
    too few matches are skipped (static or textureless frames tell nothing about motion)."""
    orb = cv2.ORB_create(max_features)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    size = frames.shape[1:3]
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    feats = [orb.detectAndCompute(g, None) for g in grey]
    out = []
    for (k1, d1), (k2, d2) in zip(feats[:-1], feats[1:]):
        if d1 is None or d2 is None or len(k1) < min_matches or len(k2) < min_matches:
            continue
        matches = matcher.match(d1, d2)
        if len(matches) < min_matches:
            continue
        src = np.float32([k1[m.queryIdx].pt for m in matches])
        dst = np.float32([k2[m.trainIdx].pt for m in matches])
        h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
        if h is None or inliers is None or inliers.sum() < min_matches or abs(h[2, 2]) < 1e-8:
            continue
        out.append(normalise_homography(h, size))
    return np.array(out).reshape(-1, 3, 3)


def fit_gaussian(homographies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood N(μ, Σ) over the 8 free entries (H[2,2] fixed to 1)."""
    h = np.asarray(homographies, dtype=np.float64).reshape(-1, 9)
    if len(h) < 2:
        raise ValueError(f"need at least 2 homographies to fit a Gaussian, got {len(h)}")
    h = h / h[:, 8:9]
    x = h[:, :8]
    mu = x.mean(axis=0)
    centred = x - mu
    cov = centred.T @ centred / len(x)  # MLE: divide by N
    return mu, cov


def sample_homographies(mu: np.ndarray, cov: np.ndarray, n: int, rng: np.random.Generator,
                        scale: float = 1.0) -> np.ndarray:
    """n matrices (n, 3, 3) drawn from N(μ, scale²·Σ)."""
    x = rng.multivariate_normal(mu, cov * scale**2, size=n, method="eigh")
    return np.concatenate([x, np.ones((n, 1))], axis=1).reshape(n, 3, 3)


def perspective_clip(image: np.ndarray, num_frames: int, mu: np.ndarray, cov: np.ndarray,
                     rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """J_0 = I, J_i = H_i(J_{i-1}); the composed matrix warps the original each time, so the
    image is resampled once per frame rather than blurred by repeated warps."""
    h, w = image.shape[:2]
    mats = sample_homographies(mu, cov, num_frames - 1, rng, scale)
    out = np.empty((num_frames, h, w, 3), dtype=image.dtype)
    out[0] = image
    total = np.eye(3)
    for t in range(1, num_frames):
        total = mats[t - 1] @ total
        out[t] = cv2.warpPerspective(image, pixel_homography(total, (h, w)), (w, h),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


CLIP_TRANSFORMS = ("still", "translation", "translation_random", "perspective", "perspective_class")


def render_clip(image: np.ndarray, spec: str, num_frames: int, rng: np.random.Generator,
                motion: tuple[np.ndarray, np.ndarray] | None = None, warp_scale: float = 1.0) -> np.ndarray:
    """Pseudo-clip (T, H, W, 3) of a still image by the named transform (Table 8's rows)."""
    if spec == "still":
        return still_clip(image, num_frames)
    if spec in ("translation", "translation_random"):
        return translation_clip(image, num_frames, rng, "random" if spec.endswith("random") else "constant")
    if spec in ("perspective", "perspective_class"):
        if motion is None:
            raise ValueError("perspective warps need a motion fit: run `omnisource fit-motion` first")
        return perspective_clip(image, num_frames, motion[0], motion[1], rng, warp_scale)
    raise ValueError(f"unknown image-to-clip transform {spec!r}; expected one of {CLIP_TRANSFORMS}")


def save_motion(path, fits: dict[str, tuple[np.ndarray, np.ndarray]], counts: dict[str, int]) -> None:
    """``fits``: key ('agnostic' or a class name) -> (μ, Σ); written atomically as .npz."""
    from ..data.manifest import atomic_write_npz

    arrays = {}
    for key, (mu, cov) in fits.items():
        arrays[f"{key}/mu"], arrays[f"{key}/cov"] = mu, cov
        arrays[f"{key}/count"] = np.array(counts.get(key, 0))

    atomic_write_npz(path, **arrays)


def load_motion(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = np.load(path)
    keys = {k.rsplit("/", 1)[0] for k in data.files}
    return {k: (data[f"{k}/mu"], data[f"{k}/cov"]) for k in keys}
