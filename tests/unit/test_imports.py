"""What a language-model run imports: not the image stack (``datasets`` alone takes about 2 s)."""

import subprocess
import sys

import pytest


def test_language_model_run_does_not_import_the_image_stack():
    code = (
        "import sys, genlit.cli, genlit.families.autoregressive, genlit.data.text\n"
        "heavy = [m for m in ('datasets', 'huggingface_hub', 'genlit.data.images', 'genlit.families.gan') "
        "if m in sys.modules]\n"
        # torchmetrics imports transformers (and with it the hub) whenever it is installed, as peft (genlit[lora])
        # installs it: that import is torchmetrics', not genlit's
        "heavy = [m for m in heavy if not (m == 'huggingface_hub' and 'transformers' in sys.modules)]\n"
        "assert not heavy, heavy\n"
        "from genlit import GAN, ImageDataModule\n"
        "assert 'datasets' in sys.modules and GAN.__name__ == 'GAN' and ImageDataModule.__name__ == 'ImageDataModule'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_unknown_top_level_name_is_an_attribute_error():
    import genlit

    with pytest.raises(AttributeError, match="NotAFamily"):
        genlit.NotAFamily  # noqa: B018
