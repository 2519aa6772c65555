"""The paper's apparent-object-size arithmetic (section 3)."""

from __future__ import annotations

import pytest

from fgvc.analysis.resolution import apparent_size_factor, matching_test_resolution, object_size_ratio
from fgvc.cli import main


def test_the_papers_numbers():
    # sigma in [0.28, 1] for the default crops; ratio about 0.80 at 224/224, so about x1.25.
    assert apparent_size_factor(0.08, 1.0) == pytest.approx(0.708, abs=1e-3)
    assert object_size_ratio(224, 224) == pytest.approx(0.80, abs=0.01)
    assert 1 / object_size_ratio(224, 224) == pytest.approx(1.25, abs=0.02)
    # ResNet-50 trained at 224 peaks at 288 without adaptation (Table 5): the matching size.
    assert matching_test_resolution(224) == 288


def test_ratio_grows_with_the_test_resolution_and_milder_crops():
    assert object_size_ratio(224, 288) > object_size_ratio(224, 224)
    assert apparent_size_factor(0.25, 1.0) > apparent_size_factor(0.08, 1.0)
    assert matching_test_resolution(64, multiple=16) == 80  # the quickstart's adapt size


def test_bad_crop_scale():
    with pytest.raises(ValueError, match=r"0 < min < max <= 1"):
        apparent_size_factor(0.5, 0.2)


def test_resolution_command(capsys):
    assert main(["resolution", "--train", "224"]) == 0
    out = capsys.readouterr().out
    assert "objects look as large as in training at about 288 px" in out
    assert "| 224 | 0.81 |" in out
    assert main(["resolution", "--train", "224", "--crop-scale", "0.9", "0.1"]) == 2
