"""The per-channel Gaussian model of the paper's appendix A.2, as pure maths (numpy).

What the paper says (appendix A.2, "Gaussian model before the last ReLU activation"): the
distribution of the activations *before the last ReLU*, looked at channel by channel, changes
with the resolution (at higher resolution the mean moves towards 0 and the variance shrinks);
acting there, unlike after the pooling (appendix A.1's Fréchet map), also changes the sparsity of
the pooled values; the aim is to match the distribution before the last ReLU at the test
resolution with that of the training data at the lower (train) resolution. Table 4 reports the
accuracy of ResNet-50 with this "adapted distribution", with and without fine-tuning.

What is computed here: each channel c is modelled as a Gaussian N(mean_c, std_c^2) of its
pre-activation values over every image and every spatial position (``ChannelMoments``), and the
map that sends the test-resolution Gaussian onto the reference one is the per-channel affine
``x -> mean_ref + std_ref / std_test * (x - mean_test)`` (``matching_map``), the only affine map
between two Gaussians that keeps the order of the values.

Choices the paper leaves open, and the ones taken (the engine side is
``fgvc.engine.adapt_methods.fit_gaussian_map``):
- "the last ReLU" is the activation module whose output is the very tensor the global pooling
  reads (found by a probe forward); on a ResNet, the ReLU after the last residual addition, so
  its input is the last BN's output plus the shortcut. It is the last non-linearity before the
  pooling, the one whose zeros make the sparsity the paper wants to move;
- the data: both Gaussians are measured on the same images (the adapt stage's ``data_split``,
  the train split by default, labels unused) through the test-time transform (resize, centre
  crop) at K_train and at K_test, as appendix A.1 measures its Fréchet fits. The paper names
  "training data at lower resolution" but no transform; with test DA at both, the resolution is
  the only difference between the two fits and no random crop adds noise;
- the map is applied to every value (negative ones included, unlike the Fréchet map, which
  leaves the zeros alone), on the activation's input, so the ReLU then cuts at the new values;
- one map per run: it is fitted for the adapt stage's K_test and applied at every resolution
  the run evaluates, whereas each column of the paper's Table 4 is adapted to its own
  resolution; compare at K_test (the report marks that column);
- the estimator: the plain mean and the population standard deviation (ddof 0) of all values,
  negative ones included: before the ReLU nothing is cut off (unlike the Fréchet fit, which drops
  the zeros the ReLU made), and these are the Gaussian's maximum-likelihood parameters;
- a channel with no spread at the test resolution (a constant channel: its std is 0, or below
  float32's resolution at the channel's scale, i.e. rounding noise) cannot be rescaled
  meaningfully, so it is only shifted (scale 1, means matched): dividing by ~0 would blow it up;
- the moments are accumulated batch by batch with the pairwise update of Chan, Golub and LeVeque
  (exact up to float rounding, no catastrophic cancellation): each batch's mean and variance are
  reduced where the activations are (the accelerator) and only C numbers per batch travel;
  scikit-learn's ``StandardScaler.partial_fit`` does the same update but needs every activation
  on the CPU as an (N x C) array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Activations are float32 (or narrower): a spread below this fraction of the channel's scale is
# rounding noise, not a distribution to rescale.
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass
class ChannelMoments:
    """Count, mean and sum of squared deviations (M2) of each of C channels."""

    count: int
    mean: np.ndarray  # (C,) float64
    m2: np.ndarray  # (C,) float64

    @classmethod
    def of(cls, values: np.ndarray, channel_axis: int = 1) -> ChannelMoments:
        """Moments of ``values`` per index along ``channel_axis``, every other axis pooled."""
        v = np.moveaxis(np.asarray(values, dtype=np.float64), channel_axis, -1)
        v = v.reshape(-1, v.shape[-1])
        mean = v.mean(axis=0)
        return cls(v.shape[0], mean, ((v - mean) ** 2).sum(axis=0))

    def merge(self, other: ChannelMoments) -> ChannelMoments:
        """The moments of both sets of values together (Chan, Golub and LeVeque's update)."""
        if self.mean.shape != other.mean.shape:
            raise ValueError(f"moments of {self.mean.shape[0]} and {other.mean.shape[0]} "
                             "channels cannot be merged")
        n = self.count + other.count
        if n == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n)
        return ChannelMoments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof 0)."""
        return np.sqrt(self.m2 / max(self.count, 1))


def merge_all(parts: list[ChannelMoments]) -> ChannelMoments:
    if not parts:
        raise ValueError("no activation to fit a Gaussian to")
    out = parts[0]
    for part in parts[1:]:
        out = out.merge(part)
    return out


def matching_map(test: ChannelMoments, reference: ChannelMoments
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, shift)`` with ``scale * x + shift`` sending N(test) onto
    N(reference); a channel with no spread at the test resolution (its std at or below float32
    rounding of its mean or of the reference std) is only shifted."""
    if test.mean.shape != reference.mean.shape:
        raise ValueError(f"{test.mean.shape[0]} channels at the test resolution, "
                         f"{reference.mean.shape[0]} at the reference one")
    spread = test.std > FLOAT32_EPS * np.maximum(np.abs(test.mean), reference.std)
    scale = np.where(spread, reference.std / np.where(spread, test.std, 1.0), 1.0)
    return scale, reference.mean - scale * test.mean


def apply_map(values: np.ndarray, scale: np.ndarray, shift: np.ndarray,
              channel_axis: int = 1) -> np.ndarray:
    """``scale * x + shift`` channel by channel, in numpy, for checks and plots."""
    v = np.moveaxis(np.asarray(values, dtype=np.float64), channel_axis, -1)
    return np.moveaxis(v * scale + shift, -1, channel_axis)


# The paper's Table 4: ResNet-50 trained at 224 on ImageNet, top-1 % on its validation set at
# each test resolution; rows: (adapted distribution, fine-tuned classifier, fine-tuned BN).
TABLE4_RESOLUTIONS = (64, 224, 288, 352, 384)
TABLE4 = (
    ((False, False, False), (29.4, 77.0, 78.4, 78.1, 77.7)),
    ((True, False, False), (29.8, 77.0, 77.7, 77.3, 76.8)),
    ((False, True, False), (40.6, 77.1, 78.6, 78.9, 78.9)),
    ((False, True, True), (41.7, 77.1, 78.5, 78.9, 79.0)),
    ((True, True, False), (41.8, 77.1, 78.5, 78.8, 78.9)),
)
