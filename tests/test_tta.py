"""Test-time augmentation: the passes, the averaging, the agreement, the bundle default, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer

from pipelines.cli.main import main
from pipelines.inference import Predictor
from pipelines.tta import augmentations, pairwise_dice, resolve_tta, tta_predict
from tests.helpers import cube_scan, edit_json, write_nifti


def test_flips_are_the_eight_mirrorings_and_full_adds_turns() -> None:
    flips = augmentations("flips")
    assert [a.flips for a in flips] == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    full = augmentations("full", spacing_mm=(1.5, 1.5, 2.0))
    assert len(full) == 16 and len({(a.flips, a.turns) for a in full}) == 16
    assert augmentations("none")[0].flips == () and augmentations("none")[0].turns == 0


def test_full_is_refused_on_anisotropic_in_plane_spacing() -> None:
    with pytest.raises(ValueError, match=r"tta 'full'.*spacing \[0.8, 1.2, 2.0\] mm.*Use --tta flips"):
        augmentations("full", spacing_mm=(0.8, 1.2, 2.0))
    with pytest.raises(ValueError, match="tta 'mirror': expected one of none, flips, full"):
        augmentations("mirror")


@pytest.mark.parametrize("mode", ["flips", "full"])
def test_every_pass_is_undone(mode: str) -> None:
    image = torch.randn(1, 2, 6, 6, 5)
    for augmentation in augmentations(mode):
        assert torch.equal(augmentation.inverse(augmentation.forward(image)), image)


def test_tta_equals_plain_output_for_a_mirror_symmetric_network() -> None:
    # A 1x1x1 convolution run through a sliding window is exactly mirror-symmetric: every mirrored
    # pass, put back in place, gives the same probabilities, so their mean is the plain answer.
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 3, 1)
    predictor = Predictor(network, SlidingWindowInferer((8, 8, 8), overlap=0.25), torch.device("cpu"))
    image = torch.rand(1, 1, 13, 11, 9)
    plain = predictor(image)
    for mode in ("flips", "full"):
        result = tta_predict(predictor, image, mode, spacing_mm=(1.0, 1.0, 2.0))
        assert len(result.passes) == (8 if mode == "flips" else 16)
        torch.testing.assert_close(torch.softmax(result.scores, 1), torch.softmax(plain, 1), atol=1e-6, rtol=0)
        assert torch.equal(result.scores.argmax(1), plain.argmax(1))
        assert all(value == pytest.approx(1.0) for value in result.agreement.values())


def test_tta_averages_probabilities_of_a_network_that_is_not_symmetric() -> None:
    # A network that calls the left half of the volume class 1: mirrored along i, it calls the right half
    # class 1 in place, so the average is 50/50 and the passes disagree.
    def left_half(x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
        logits[:, 0, x.shape[2] // 2 :] = 20.0
        logits[:, 1, : x.shape[2] // 2] = 20.0
        return logits

    image = torch.zeros(1, 1, 8, 4, 4)
    result = tta_predict(left_half, image, "flips")
    probabilities = torch.softmax(result.scores, 1)
    torch.testing.assert_close(probabilities[0, 1], torch.full((8, 4, 4), 0.5), atol=1e-4, rtol=0)
    assert result.agreement[1] == pytest.approx(12 / 28)  # 12 of the 28 pairs mirror i alike: Dice 1, others 0


def test_pairwise_dice() -> None:
    a = torch.tensor([[[1, 1, 0, 2]]], dtype=torch.uint8)
    b = torch.tensor([[[1, 0, 0, 0]]], dtype=torch.uint8)
    agreement = pairwise_dice([a, b])
    assert agreement == {1: pytest.approx(2 * 1 / 3), 2: 0.0}


def test_the_bundle_declares_the_default_and_a_bad_one_is_named() -> None:
    assert resolve_tta(None, {}) == "none"
    assert resolve_tta(None, {"medseg_tta_default": "flips"}) == "flips"
    assert resolve_tta("none", {"medseg_tta_default": "flips"}) == "none"
    with pytest.raises(ValueError, match=r"b/metadata\.json: medseg_tta_default 'all': expected one of"):
        resolve_tta(None, {"medseg_tta_default": "all"}, "b/metadata.json")


def test_segment_with_tta_flips_matches_plain_and_records_it(
    tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, affine, _truth = cube_scan("LPS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    out = tmp_path / "out"
    assert main(["segment", str(path), "--bundle", str(zoo_bundle), "-o", str(out), "--case-id", "plain"]) == 0
    args = ["segment", str(path), "--bundle", str(zoo_bundle), "-o", str(out), "--case-id", "tta", "--tta", "flips"]
    assert main(args) == 0
    plain = np.asarray(nib.load(out / "plain" / "labels.nii.gz").dataobj)
    flipped = np.asarray(nib.load(out / "tta" / "labels.nii.gz").dataobj)
    assert np.array_equal(plain, flipped) and plain.any()
    run = json.loads((out / "tta" / "run.json").read_text())
    assert run["options"]["tta"] == "flips"
    assert run["quality"]["tta"] == "flips" and run["quality"]["tta_passes"] == 8
    stats = json.loads((out / "tta" / "stats.json").read_text())
    assert stats[0]["tta_agreement"] == pytest.approx(1.0)
    assert json.loads((out / "plain" / "run.json").read_text())["quality"]["tta"] == "none"

    edit_json(zoo_bundle / "configs" / "metadata.json", lambda m: m.update(medseg_tta_default="flips"))
    again = [
        "segment",
        str(path),
        "--bundle",
        str(zoo_bundle),
        "-o",
        str(out),
        "--case-id",
        "default",
        "--trust-bundle",
    ]
    assert main(again) == 0  # the bundle changed: trust it again
    assert json.loads((out / "default" / "run.json").read_text())["quality"]["tta_passes"] == 8
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*args[:-2], "--tta", "sideways"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def test_bundles_limit_the_mirror_axes() -> None:
    assert [a.flips for a in augmentations("flips", axes=(0,))] == [(), (0,)]
    with pytest.raises(ValueError, match=r"tta 'flips': the bundle allows no mirroring \(medseg_tta_axes: \[\]\)"):
        resolve_tta("flips", {"medseg_tta_axes": []})
    with pytest.raises(ValueError, match=r"b/metadata\.json: medseg_tta_axes must be a list of axes 0, 1, 2"):
        resolve_tta("flips", {"medseg_tta_axes": [3]}, "b/metadata.json")
    assert resolve_tta("none", {"medseg_tta_axes": []}) == "none"
