"""Reading 2D particle images from STAR files: stacks, optics groups, CTF columns, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoshot.data.particles2d import CTFParams, phase_flip, prepare_images, resample_images, standardise
from cryoshot.errors import CryoshotError
from cryoshot.io.images2d import load_particle_images
from cryoshot.io.mrc import write_mrc
from cryoshot.io.particles import relative_image_name, split_image_name
from cryoshot.io.star import read_star_blocks, write_star
from tests.embedding.helpers import write_toy_particles


def test_image_name_stack_notation_round_trips(tmp_path):
    for i in (0, 5, 999_998):
        name = relative_image_name(tmp_path / "s" / "particles.mrcs", tmp_path, i)
        assert name == f"{i + 1:06d}@s/particles.mrcs"
        assert split_image_name(name) == (i, "s/particles.mrcs")


def test_reads_a_relion_stack_with_optics_and_ctf(tmp_path):
    star = write_toy_particles(tmp_path / "set", per_view=5, box=32, angpix=7.5)
    p = load_particle_images(star, label_column="rlnClassNumber", progress=False)
    assert p.images.shape == (10, 32, 32) and p.pixel_size_A == 7.5
    assert sorted(set(p.labels)) == [1, 2]
    assert np.allclose(p.ctf["defocus_u_A"], 15000.0) and np.allclose(p.ctf["amplitude_contrast"], 0.1)
    assert p.optics is not None and list(p.table.columns)[:2] == ["rlnImageName", "rlnClassNumber"]
    # image i of the STAR is image i of the stack it names
    from cryoshot.io.mrc import read_mrc

    stack = read_mrc(tmp_path / "set" / "particles.mrcs").data
    assert np.array_equal(p.images[3], stack[3])


def test_rows_in_any_order_and_single_image_files(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(4, 16, 16)).astype(np.float32)
    write_mrc(tmp_path / "a.mrcs", stack, 5.0, stack=True)
    write_mrc(tmp_path / "single.mrc", stack[0] * 2, 5.0)
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": ["000004@a.mrcs", "single.mrc", "000002@a.mrcs"]}))
    p = load_particle_images(tmp_path / "p.star", progress=False)
    assert np.array_equal(p.images[0], stack[3]) and np.array_equal(p.images[1], stack[0] * 2)
    assert np.array_equal(p.images[2], stack[1]) and p.pixel_size_A == 5.0 and p.ctf is None
    # a single image written as one section (nz = 1) is the same image, and the STAR is seen as 2D
    from cryoshot.io.images2d import is_2d_particle_set

    write_mrc(tmp_path / "section.mrc", stack[None, 0] * 2, 5.0)
    write_star(tmp_path / "s.star", pd.DataFrame({"rlnImageName": ["section.mrc", "single.mrc"]}))
    p = load_particle_images(tmp_path / "s.star", progress=False)
    assert np.array_equal(p.images[0], p.images[1]) and is_2d_particle_set(tmp_path / "s.star")


def test_relion30_pixel_size_from_detector_and_magnification(tmp_path):
    write_mrc(tmp_path / "a.mrcs", np.zeros((2, 16, 16), np.float32), 1.0, stack=True)
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": ["1@a.mrcs", "2@a.mrcs"],
                                                  "rlnDetectorPixelSize": [5.0, 5.0], "rlnMagnification": [10000.0] * 2}))  # fmt: skip
    assert load_particle_images(tmp_path / "p.star", progress=False).pixel_size_A == pytest.approx(5.0)


def _bad_set(tmp_path, kind):
    write_mrc(tmp_path / "a.mrcs", np.zeros((3, 16, 16), np.float32), 5.0, stack=True)
    names = ["1@a.mrcs", "2@a.mrcs"]
    if kind == "beyond":
        names.append("7@a.mrcs")
    elif kind == "mixed":
        write_mrc(tmp_path / "b.mrcs", np.zeros((2, 20, 20), np.float32), 5.0, stack=True)
        names.append("1@b.mrcs")
    elif kind == "volume":
        write_mrc(tmp_path / "vol.mrc", np.zeros((16, 16, 16), np.float32), 5.0)
        names.append("vol.mrc")
    elif kind == "volume-indexed":
        write_mrc(tmp_path / "vol.mrc", np.zeros((16, 16, 16), np.float32), 5.0)
        names.append("1@vol.mrc")
    elif kind == "nan":
        import mrcfile

        data = np.zeros((3, 16, 16), np.float32)
        data[2, 4, 4] = np.nan
        with mrcfile.new(tmp_path / "n.mrcs", overwrite=True) as m:
            m.set_data(data)
            m.set_image_stack()
            m.voxel_size = 5.0
        names.append("3@n.mrcs")
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": names}))
    return tmp_path / "p.star"


@pytest.mark.parametrize("kind,words", [("beyond", "beyond the end"), ("mixed", "mixed image sizes"),
                                        ("volume", "3D volume"), ("volume-indexed", "3D volume"), ("nan", "NaN")])  # fmt: skip
def test_bad_sets_are_clear_errors(tmp_path, kind, words):
    with pytest.raises(CryoshotError, match=words):
        load_particle_images(_bad_set(tmp_path, kind), progress=False)


def test_resampling_keeps_the_physical_scale():
    y, x = np.mgrid[:64, :64] - 32
    img = np.exp(-(x**2 + y**2) / (2 * 6.0**2)).astype(np.float32)[None]  # sigma 6 px at 5 Å = 30 Å
    half = resample_images(img, 5.0, 32, 10.0)[0]  # 10 Å/px: sigma 3 px, centre at 16
    yy, xx = np.mgrid[:32, :32] - 16
    w = half / half.sum()
    assert np.unravel_index(half.argmax(), half.shape) == (16, 16)
    assert np.sqrt((w * xx**2).sum()) == pytest.approx(3.0, rel=0.05)
    back = resample_images(half[None], 10.0, 64, 5.0)[0]
    assert np.corrcoef(back.ravel(), img[0].ravel())[0, 1] > 0.99


def test_phase_flip_makes_the_ctf_positive():
    from cryoshot.simulate.optics import Microscope, ctf_2d_batch

    rng = np.random.default_rng(0)
    spec = np.fft.rfft2(rng.normal(size=(1, 32, 32)))
    spec[..., 16, :] = 0  # no Nyquist row or column, where an astigmatic CTF cannot be Hermitian
    spec[..., 16] = 0
    img = np.fft.irfft2(spec, s=(32, 32)).astype(np.float32)
    ctf = ctf_2d_batch(32, 5.0, np.array([2.0]), np.array([1.8]), np.array([40.0]), Microscope(amplitude_contrast=0.1))
    filtered = np.fft.irfft2(np.fft.rfft2(img) * ctf, s=(32, 32)).astype(np.float32)
    params = CTFParams(np.array([2.0]), np.array([1.8]), np.array([40.0]), np.array([300.0]), np.array([2.7]),
                       np.array([0.1]))  # fmt: skip
    flipped = phase_flip(filtered, 5.0, params)
    expect = np.fft.irfft2(np.fft.rfft2(img) * np.abs(ctf), s=(32, 32))
    assert np.allclose(flipped, expect, atol=1e-4)


def test_standardise_and_prepare():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(3, 32, 32)) * 5 + 2).astype(np.float32)
    s = standardise(x)
    from cryoshot.data.particles2d import disc_mask

    m = disc_mask(32)
    assert np.allclose(s[:, m].mean(1), 0, atol=1e-5) and np.allclose(s[:, m].std(1), 1, atol=1e-4)
    assert prepare_images(x, 10.0, 64, 5.0).shape == (3, 64, 64)


def test_output_optics_block_survives(tmp_path):
    star = write_toy_particles(tmp_path / "set", per_view=3)
    p = load_particle_images(star, progress=False)
    write_star(tmp_path / "out.star", {"optics": p.optics, "particles": p.table})
    blocks = read_star_blocks(tmp_path / "out.star")
    assert set(blocks) == {"optics", "particles"}


def test_beyond_message_names_the_stack_size(tmp_path):
    with pytest.raises(CryoshotError, match="holds 3 image"):
        load_particle_images(_bad_set(tmp_path, "beyond"), progress=False)


def test_relion_project_paths_resolve_from_the_project_folder(tmp_path, monkeypatch):
    """RELION names images from the project folder: Class2D/job010/run_data.star holds Extract/job005/..."""
    stack = np.random.default_rng(1).normal(size=(3, 16, 16)).astype(np.float32)
    (tmp_path / "Extract" / "job005").mkdir(parents=True)
    write_mrc(tmp_path / "Extract" / "job005" / "particles.mrcs", stack, 5.0, stack=True)
    (tmp_path / "Class2D" / "job010").mkdir(parents=True)
    star = tmp_path / "Class2D" / "job010" / "run_data.star"
    write_star(star, pd.DataFrame({"rlnImageName": ["000003@Extract/job005/particles.mrcs",
                                                    "000001@Extract/job005/particles.mrcs"]}))  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # found from the STAR file's folders, not the working folder
    p = load_particle_images(star, progress=False)
    assert np.array_equal(p.images[0], stack[2]) and np.array_equal(p.images[1], stack[0])
    # a name found nowhere is reported next to the STAR file, where it was first looked for
    write_star(star, pd.DataFrame({"rlnImageName": ["000001@Extract/job999/particles.mrcs"]}), force=True)
    with pytest.raises(CryoshotError, match="job010/Extract/job999"):
        load_particle_images(star, progress=False)
