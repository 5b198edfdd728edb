"""Tests for genlit.imaging: uint8 conversion, grids, scatter pictures and atomic PNG writing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genlit.imaging import image_grid, samples_picture, save_png, scatter_image, to_uint8


def test_to_uint8_maps_range_and_layout():
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 2.0, 0.5]).reshape(1, 1, 2, 3)  # (B, C, H, W)
    out = to_uint8(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 3, 1) and out.device.type == "cpu"
    # -1 -> 0, 0 -> 127.5 rounds (half to even) to 128, 1 -> 255; out of range clamps; 0.5 -> 191.25 -> 191
    assert out.flatten().tolist() == [0, 128, 255, 0, 255, 191]


def test_to_uint8_moves_channels_last():
    x = torch.zeros(2, 3, 4, 5)
    x[:, 0] = 1.0  # red channel full
    out = to_uint8(x)
    assert out.shape == (2, 4, 5, 3)
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 128).all()


def test_to_uint8_rejects_flat_input():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        to_uint8(torch.zeros(4, 2))


def test_image_grid_size_and_placement():
    images = np.stack([np.full((3, 4, 1), i + 1, np.uint8) for i in range(5)])  # (5, 3, 4, 1)
    grid = image_grid(images, nrow=2, padding=1)
    # 3 rows of 2: height 3 * (3 + 1) + 1 = 13, width 2 * (4 + 1) + 1 = 11
    assert grid.shape == (13, 11, 1) and grid.dtype == np.uint8
    assert (grid[1:4, 1:5] == 1).all()  # image 0 at row 0, col 0
    assert (grid[1:4, 6:10] == 2).all()  # image 1 at row 0, col 1
    assert (grid[9:12, 1:5] == 5).all()  # image 4 at row 2, col 0
    assert (grid[9:12, 6:10] == 0).all()  # empty cell keeps the pad value
    assert (grid[0] == 0).all() and (grid[:, 5] == 0).all()  # padding lines


def test_image_grid_default_is_square_ish_and_accepts_tensors():
    images = torch.zeros(10, 2, 2, 3, dtype=torch.uint8)
    grid = image_grid(images, padding=0)
    assert grid.shape == (3 * 2, 4 * 2, 3)  # ceil(sqrt(10)) = 4 per row, 3 rows


def test_image_grid_rejects_float():
    with pytest.raises(ValueError, match="uint8"):
        image_grid(np.zeros((2, 2, 2, 1), np.float32))


def test_scatter_puts_dots_where_points_are():
    pic = scatter_image(np.array([[1.0, 1.0]]), size=101, extent=2.0)
    assert pic.shape == (101, 101, 3) and pic.dtype == np.uint8
    # x = 1 -> col (1 + 2) / 4 * 100 = 75; y = 1 -> row (2 - 1) / 4 * 100 = 25
    assert tuple(pic[25, 75]) == (31, 119, 180)
    assert tuple(pic[75, 25]) == (255, 255, 255)  # the mirrored spot stays white
    assert tuple(pic[50, 10]) == (210, 210, 210) and tuple(pic[10, 50]) == (210, 210, 210)  # axes


def test_scatter_marks_centres_and_auto_extent():
    pic = scatter_image(torch.tensor([[0.0, 4.0]]), centers=torch.tensor([[-4.0, 0.0]]), size=111)
    # extent = 1.1 * 4 = 4.4: centre x = -4 -> col round(0.4 / 8.8 * 110) = 5, row 55
    assert tuple(pic[55, 5]) == (214, 39, 40)
    assert tuple(pic[5, 55]) == (31, 119, 180)  # the point at y = 4 -> row 5


def test_samples_picture_dispatch():
    grid = samples_picture(torch.zeros(4, 1, 5, 5), nrow=2)
    assert grid.shape == (2 * 7 + 2, 2 * 7 + 2, 1)
    scatter = samples_picture(torch.randn(16, 2))
    assert scatter.shape == (512, 512, 3)
    with pytest.raises(ValueError, match="cannot draw samples of shape"):
        samples_picture(torch.zeros(4, 3))


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_save_png_round_trip_and_no_temp_files(tmp_path, channels, mode):
    picture = np.random.default_rng(0).integers(0, 256, (6, 7, channels), dtype=np.uint8)
    path = save_png(picture, tmp_path / "a" / "b" / "pic.png")
    assert path == tmp_path / "a" / "b" / "pic.png"
    with Image.open(path) as img:
        assert img.mode == mode
        back = np.asarray(img)
    np.testing.assert_array_equal(back.reshape(picture.shape), picture)
    assert sorted(p.name for p in path.parent.iterdir()) == ["pic.png"]


def test_save_png_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        save_png(np.zeros((4, 4, 3), np.float32), tmp_path / "x.png")
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        save_png(np.zeros((4, 4, 2), np.uint8), tmp_path / "y.png")
    assert list(tmp_path.iterdir()) == []
