"""Build the offline test data layout that genlit's tests read through GENLIT_DATA_DIR (CI with network).

MNIST: the official 10,000-image test set, split in order into train (first 9,000) and test (last 1,000),
written as Hugging Face parquet files; Tiny Shakespeare as plain text.
Usage: python .github/prepare_test_data.py OUT_DIR
"""

import sys
import urllib.request
from pathlib import Path

from datasets import load_dataset

SHAKESPEARE = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def main(out: Path) -> None:
    test = load_dataset("ylecun/mnist", split="test")
    (out / "mnist").mkdir(parents=True, exist_ok=True)
    test.select(range(9000)).to_parquet(str(out / "mnist" / "train-00000-of-00001.parquet"))
    test.select(range(9000, 10000)).to_parquet(str(out / "mnist" / "test-00000-of-00001.parquet"))
    (out / "tinyshakespeare").mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(SHAKESPEARE, out / "tinyshakespeare" / "input.txt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
