"""``benchmarks.text2img_prompts`` on a text-to-image checkpoint fitted for a few steps: one table line per template set
and guidance with an accuracy in [0, 1], the best-guidance line, and a grid per setting (one row per digit)."""

import re

import numpy as np
import pytest
from PIL import Image

from benchmarks.text2img_prompts import main, template_prompts
from genlit.data.captions import HELD_OUT_TEMPLATES, caption_digit
from tests.integration.helpers import fit, mnist_args
from tests.integration.test_text_to_image_cli import CONFIG, FEW, SMALL

ONLY_LAST = [  # no logger, no sample grid: only the last checkpoint
    "--trainer.logger", "false",
    "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {save_last: true}}]",
]  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, mnist_dir):
    run = fit(CONFIG, tmp_path_factory.mktemp("t2i_bench"), *mnist_args(mnist_dir), *FEW, *SMALL,
              *ONLY_LAST)  # fmt: skip
    return run / "checkpoints" / "last.ckpt"


def test_prompts_are_balanced_and_name_their_digit():
    prompts, digits = template_prompts(100, held_out=True)
    assert digits.tolist() == [i % 10 for i in range(100)]
    assert [caption_digit(p) for p in prompts] == digits.tolist()
    assert template_prompts(100, held_out=True)[0] == prompts  # deterministic
    assert HELD_OUT_TEMPLATES[0].startswith("someone wrote") and "drawing of the digit" in HELD_OUT_TEMPLATES[1]
    assert all(p.startswith("someone wrote") for p in prompts[:10])  # each digit cycles through the templates
    assert all("drawing of the digit" in p for p in prompts[10:20])
    assert all(p.startswith("someone wrote") for p in prompts[50:60])  # 5 held-out templates: round again
    assert template_prompts(60, held_out=True)[0] == prompts[:60]  # prompt i does not depend on --num


def test_the_table_and_the_grids(ckpt, tmp_path, capsys):
    results = main(["--ckpt", str(ckpt), "--num", "20", "--sampler", "DDIM-2", "--out-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if re.match(r"\s+(train|held_out)\s+guidance", line)]
    assert len(table) == 6, lines  # 2 template sets x guidance 1, 2, 4
    for line in table:
        accuracy = float(re.search(r"accuracy (\S+)", line)[1])
        assert 0.0 <= accuracy <= 1.0 and "fid" in line and "class_coverage" in line
    assert set(results) == {(s, g) for s in ("train", "held_out") for g in (1.0, 2.0, 4.0)}
    assert re.match(r"best guidance by held-out accuracy: [124] \(held-out accuracy [01]\.\d{4}", lines[-1]), lines[-1]
    grid = np.asarray(Image.open(tmp_path / "prompts_held_out_g4.png"))
    assert grid.shape[:2] == (10 * 30 + 2, 2 * 30 + 2)  # 10 rows (digits) of 2 samples, 2-pixel padding
