"""Sample quality on the 8x8 digits: a Fréchet distance in the feature space of a small classifier.

The role Inception-v3 plays in FID (Heusel et al. 2017) is played by :class:`DigitsClassifier`, a
small convolutional network trained on the digits' train split with a fixed seed. Its penultimate
activations (64 features) are the embedding; the distance is FID's

``d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})``

(Fréchet 1957 / Dowson & Landau 1982, between Gaussians fitted to the two feature sets; reported,
like FID, as the squared distance). The classifier is trained on first use (a few seconds on one
core) and cached as safetensors under ``$TIMESTEPPER_CACHE`` (default ``~/.cache/timestepper``).
:func:`digits_report` also gives the class histogram of samples and the classifier's confidence
(mean max softmax probability), and the accuracy on requested labels for conditional samples.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..bench.metrics import feature_statistics, frechet_distance  # noqa: F401 - also this module's, as before
from .data import digits

CLASSIFIER_VERSION = 1
CLASSIFIER_SEED = 0
CLASSIFIER_EPOCHS = 30


class DigitsClassifier(nn.Module):
    """Conv(32)-Conv(32)-pool-Conv(64)-pool-FC(64)-FC(10) on ``(N, 1, 8, 8)`` digits in
    ``[-1, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(256, 64),
            nn.ReLU(),
        )
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(64, 10)

    def features(self, x: Tensor) -> Tensor:
        """The 64 penultimate activations (the metric's embedding)."""
        return self.conv(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)`` of images ``(B, 1, 8, 8)``."""
        return self.head(self.drop(self.features(x)))


def cache_dir() -> Path:
    """``$TIMESTEPPER_CACHE`` or ``~/.cache/timestepper``."""
    return Path(os.environ.get("TIMESTEPPER_CACHE", Path.home() / ".cache" / "timestepper"))


def _shift(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random translation by up to one pixel (background value -1), for augmentation."""
    pad = nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    return pad[..., dy : dy + 8, dx : dx + 8]


def train_classifier(
    epochs: int = CLASSIFIER_EPOCHS, seed: int = CLASSIFIER_SEED
) -> DigitsClassifier:
    """Train the classifier on the train split (Adam, batch 64, one-pixel shifts);
    deterministic for a seed. Gradients are enabled here, since the metric that needs the
    classifier usually runs under ``torch.no_grad``."""
    with torch.enable_grad():
        return _fit_classifier(epochs, seed)


def _fit_classifier(epochs: int, seed: int) -> DigitsClassifier:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = digits("train")
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(_shift(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: DigitsClassifier, split: str = "test") -> float:
    """Fraction of the digits ``split`` that ``model`` classifies correctly."""
    x, y = digits(split)
    return float((model(x).argmax(1) == y).double().mean())


_CACHED: dict[str, DigitsClassifier] = {}


def digits_classifier(retrain: bool = False) -> DigitsClassifier:
    """The metric's classifier (eval mode): loaded from the cache, or trained and cached.

    A cached file that cannot be read (truncated, corrupt) is reported with a warning naming it
    and rebuilt. The file is written under a unique temporary name and renamed, so concurrent
    processes sharing a cache never see a partial file.
    """
    path = cache_dir() / f"digits_classifier_v{CLASSIFIER_VERSION}.safetensors"
    key = str(path)
    if not retrain and key in _CACHED:
        return _CACHED[key]
    model = _load_cached(path) if path.is_file() and not retrain else None
    if model is None:
        model = train_classifier()
        _store(model, path)
    model.requires_grad_(False)
    _CACHED[key] = model
    return model


def _load_cached(path: Path) -> DigitsClassifier | None:
    """The classifier cached at ``path``; ``None`` (with a warning) when it cannot be read."""
    from safetensors.torch import load_file

    model = DigitsClassifier()
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # safetensors and load_state_dict raise several types
        warnings.warn(
            f"the cached digits classifier {path} is unreadable ({e}); rebuilding it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return model.eval()


def _store(model: DigitsClassifier, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp),
            metadata={"test_accuracy": f"{classifier_accuracy(model):.4f}"},
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_images(x: Tensor) -> Tensor:
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits samples must be shaped (N, 1, 8, 8), got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float32)


@torch.no_grad()
def digit_features(x: Tensor, batch: int = 1024) -> Tensor:
    """Float64 embeddings ``(N, 64)`` of digits images in ``[-1, 1]``."""
    x = _check_images(x)
    clf = digits_classifier()
    return torch.cat([clf.features(x[i : i + batch]) for i in range(0, x.shape[0], batch)]).double()


def reference_features(split: str = "train") -> Tensor:
    """Features of the real digits of ``split`` (the reference set of :func:`digits_report`)."""
    return digit_features(digits(split)[0])


def split_half_distance(split: str = "test", seed: int = 0) -> float:
    """Fréchet distance between two random halves of the real ``split``: the noise floor a model's
    distance (to the other split) should be compared with."""
    f = reference_features(split)
    perm = torch.randperm(f.shape[0], generator=torch.Generator().manual_seed(seed))
    h = f.shape[0] // 2
    return frechet_distance(f[perm[:h]], f[perm[h : 2 * h]])


@torch.no_grad()
def digits_report(samples: Tensor, labels: Tensor | None = None, reference: str = "test") -> dict:
    """Quality of digits samples ``(N, 1, 8, 8)``.

    Returns a dict with ``frechet`` (distance to the real ``reference`` split), ``histogram``
    (fraction of samples per predicted class), ``confidence`` (mean max softmax probability) and,
    with ``labels``, ``accuracy`` (fraction classified as the requested label).
    """
    x = _check_images(samples)
    clf = digits_classifier()
    feats = torch.cat([clf.features(x[i : i + 1024]) for i in range(0, x.shape[0], 1024)])
    probs = torch.softmax(clf.head(feats), dim=1).double()
    pred = probs.argmax(1)
    out = {
        "frechet": frechet_distance(feats.double(), reference_features(reference)),
        "histogram": (torch.bincount(pred, minlength=10).double() / x.shape[0]).tolist(),
        "confidence": float(probs.max(1).values.mean()),
    }
    if labels is not None:
        out["accuracy"] = float((pred == torch.as_tensor(labels).cpu()).double().mean())
    return out
