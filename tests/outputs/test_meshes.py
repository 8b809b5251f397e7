"""Surface meshes: enclosed volume, world coordinates (LPS), file formats, and the segment output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli.main import main
from pipelines.outputs.meshes import mesh_volume_mm3, structure_mesh, taubin_smooth, write_meshes
from tests.helpers import cube_scan, oriented_affine, write_nifti

SHAPE = (48, 40, 24)


def _sphere(affine: np.ndarray, centre_ras: np.ndarray, radius_mm: float) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(world - centre_ras, axis=-1) <= radius_mm).astype(np.uint8)


def _read_stl(path: Path) -> tuple[bytes, np.ndarray]:
    data = path.read_bytes()
    count = int(np.frombuffer(data[80:84], "<u4")[0])
    dtype = np.dtype([("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")])
    triangles = np.frombuffer(data[84:], dtype)
    assert len(triangles) == count and len(data) == 84 + 50 * count
    return data[:80], triangles["vertices"].astype(np.float64)


def _read_obj(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    lines = path.read_text().splitlines()
    vertices = np.array([[float(v) for v in line.split()[1:]] for line in lines if line.startswith("v ")])
    faces = np.array([[int(v) - 1 for v in line.split()[1:]] for line in lines if line.startswith("f ")])
    return [line for line in lines if line.startswith("#")], vertices, faces


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS"])
def test_sphere_mesh_volume_and_world_coordinates(tmp_path: Path, codes: str) -> None:
    affine = oriented_affine(codes, SHAPE, spacing=(1.0, 1.2, 2.0))
    centre_ras = affine[:3, :3] @ (np.array(SHAPE) / 2 - 0.3) + affine[:3, 3]
    labels = _sphere(affine, centre_ras, 14.0)
    voxel_volume = labels.sum() * abs(np.linalg.det(affine[:3, :3]))
    written = write_meshes(labels, affine, {1: "ball"}, tmp_path / "meshes")
    assert sorted(written) == ["mesh_1_obj", "mesh_1_stl"]
    assert written["mesh_1_stl"].path == tmp_path / "meshes" / "1_ball.stl"

    header, corners = _read_stl(written["mesh_1_stl"].path)
    assert b"SPACE=LPS" in header
    comments, vertices, faces = _read_obj(written["mesh_1_obj"].path)
    assert any("SPACE=LPS" in c for c in comments)
    np.testing.assert_allclose(vertices[faces], corners, atol=1e-3)  # both files hold the same surface

    assert mesh_volume_mm3(vertices, faces) == pytest.approx(voxel_volume, rel=0.05)
    # vertices are in LPS mm: back to RAS, they sit on the sphere (within one voxel of its radius)
    ras = vertices * np.array([-1.0, -1.0, 1.0])
    radii = np.linalg.norm(ras - centre_ras, axis=1)
    assert radii.min() > 14.0 - 2.0 and radii.max() < 14.0 + 2.0
    np.testing.assert_allclose(ras.mean(axis=0), centre_ras, atol=0.5)
    # and map into the label map's voxels where the sphere's boundary is
    ijk = np.rint((np.linalg.inv(affine) @ np.c_[ras, np.ones(len(ras))].T)[:3].T).astype(int)
    inside = labels[tuple(np.clip(ijk, 0, np.array(SHAPE) - 1).T)]
    assert 0.2 < inside.mean() < 0.8  # on the surface: about half the nearest voxels are in
    # outward normals: the signed volume is positive
    a, b, c = (vertices[faces[:, n]] for n in range(3))
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() > 0


def test_smoothing_keeps_the_volume_and_a_cut_structure_is_closed(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:30, 10:30, 0:12] = 3  # touches the k = 0 face of the field of view
    written = write_meshes(labels, affine, {3: "box/odd name"}, tmp_path, smoothing_sigma_mm=1.0)
    _, vertices, faces = _read_obj(written["mesh_3_obj"].path)
    assert written["mesh_3_obj"].path.name == "3_box_odd_name.obj"
    assert mesh_volume_mm3(vertices, faces) == pytest.approx(20 * 20 * 12, rel=0.1)
    with pytest.raises(ValueError, match="smoothing_sigma_mm: expected 0 or more"):
        write_meshes(labels, affine, {}, tmp_path, smoothing_sigma_mm=-1)


def test_segment_writes_meshes_in_their_folder(tmp_path: Path, zoo_bundle: Path) -> None:
    image, affine, truth = cube_scan("LPS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    out = tmp_path / "out"
    assert main(["segment", str(path), "--bundle", str(zoo_bundle), "-o", str(out), "--outputs", "mesh"]) == 0
    assert sorted(p.name for p in (out / "scan" / "meshes").iterdir()) == ["1_label_1.obj", "1_label_1.stl"]
    run = json.loads((out / "scan" / "run.json").read_text())
    assert "mesh" in run["options"]["outputs"]
    _, vertices, faces = _read_obj(out / "scan" / "meshes" / "1_label_1.obj")
    volume = truth.sum() * abs(np.linalg.det(affine[:3, :3]))
    assert mesh_volume_mm3(vertices, faces) == pytest.approx(volume, rel=0.1)


def test_taubin_smoothing_rounds_the_voxel_steps_and_keeps_volume_and_place(tmp_path: Path) -> None:
    affine = oriented_affine("LPS", SHAPE, spacing=(1.0, 1.2, 2.0))
    centre_ras = affine[:3, :3] @ (np.array(SHAPE) / 2 - 0.3) + affine[:3, 3]
    labels = _sphere(affine, centre_ras, 14.0)
    voxel_volume = labels.sum() * abs(np.linalg.det(affine[:3, :3]))
    raw, faces = structure_mesh(labels.astype(bool), affine)
    smooth, same_faces = structure_mesh(labels.astype(bool), affine, smoothing_iterations=10)
    np.testing.assert_array_equal(faces, same_faces)
    centre_lps = centre_ras * np.array([-1.0, -1.0, 1.0])

    def roughness(vertices: np.ndarray) -> float:  # spread of the distance to the centre (mm)
        return float(np.linalg.norm(vertices - centre_lps, axis=1).std())

    assert roughness(smooth) < 0.7 * roughness(raw)  # the staircase is smoothed away (0.33 -> 0.19 mm)
    assert mesh_volume_mm3(smooth, faces) == pytest.approx(voxel_volume, rel=0.05)  # Taubin: no shrinkage
    np.testing.assert_allclose(smooth.mean(axis=0), raw.mean(axis=0), atol=0.2)  # nothing moved
    np.testing.assert_array_equal(taubin_smooth(raw, faces, 0), raw)

    written = write_meshes(labels, affine, {1: "ball"}, tmp_path, smoothing_iterations=10)
    _, vertices, _ = _read_obj(written["mesh_1_obj"].path)
    np.testing.assert_allclose(vertices, smooth, atol=1e-3)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="mesh smoothing: expected a whole number of iterations >= 0"):
            write_meshes(labels, affine, {}, tmp_path, smoothing_iterations=bad)  # type: ignore[arg-type]


def test_segment_mesh_smoothing_option(tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, affine, _ = cube_scan("LPS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    argv = ["segment", str(path), "--bundle", str(zoo_bundle), "--outputs", "mesh"]
    assert main([*argv, "-o", str(tmp_path / "raw")]) == 0
    assert main([*argv, "-o", str(tmp_path / "smooth"), "--mesh-smoothing", "8"]) == 0
    _, raw, _ = _read_obj(tmp_path / "raw" / "scan" / "meshes" / "1_label_1.obj")
    _, smooth, _ = _read_obj(tmp_path / "smooth" / "scan" / "meshes" / "1_label_1.obj")
    assert raw.shape == smooth.shape and np.abs(raw - smooth).max() > 0.1  # the corners of the cube are rounded
    run = json.loads((tmp_path / "smooth" / "scan" / "run.json").read_text())
    assert run["options"]["mesh_smoothing"] == 8
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([*argv, "-o", str(tmp_path / "bad"), "--mesh-smoothing", "-2"])
    assert stop.value.code == 2
    assert "expected a whole number of smoothing iterations >= 0, got '-2'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
