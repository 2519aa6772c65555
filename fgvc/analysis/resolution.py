"""The paper's section 3 as arithmetic: how much larger objects look at train time than at test
time, and the test resolution that makes them look the same size.

RandomResizedCrop with area scale sigma^2 in [s-^2, s+^2] enlarges objects on average by
1 / F relative to the full image, with F = 2/3 (s+^3 - s-^3) / (s+^2 - s-^2); test DA shows
the image resized to K_test / crop_pct. So

    E[r_test / r_train] = F * (K_test / crop_pct) / K_train,

about 0.80 for the default (0.08, 1) crops at K_test = K_train = 224: test objects look 20 %
smaller, and a test resolution about 1.25 times higher matches them.
"""

from __future__ import annotations

import math


def apparent_size_factor(scale_min: float = 0.08, scale_max: float = 1.0) -> float:
    """F of the paper: the mean of sigma over RandomResizedCrop's area range (sigma = sqrt)."""
    if not 0 < scale_min < scale_max <= 1:
        raise ValueError(f"crop scale must satisfy 0 < min < max <= 1, got ({scale_min}, "
                         f"{scale_max})")
    lo, hi = math.sqrt(scale_min), math.sqrt(scale_max)
    return 2 / 3 * (hi**3 - lo**3) / (hi**2 - lo**2)


def object_size_ratio(train_resolution: int, test_resolution: int, crop_pct: float = 0.875,
                      scale: tuple[float, float] = (0.08, 1.0)) -> float:
    """E[r_test / r_train]: below 1, objects look smaller at test time than in training."""
    return apparent_size_factor(*scale) * (test_resolution / crop_pct) / train_resolution


def matching_test_resolution(train_resolution: int, crop_pct: float = 0.875,
                             scale: tuple[float, float] = (0.08, 1.0), multiple: int = 32) -> int:
    """The test resolution at which objects look as large as in training, rounded to a
    multiple of ``multiple`` (the paper, appendix B: other sizes lose accuracy)."""
    exact = train_resolution * crop_pct / apparent_size_factor(*scale)
    return max(multiple, multiple * math.floor(exact / multiple + 0.5))
