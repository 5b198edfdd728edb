"""Token sequences without a tokenizer (e.g. VQ-VAE codes): the DataModule's (x, y) pairs after BOS, its vocabulary
and its one-line errors; a tiny GPT learns a cyclic pattern and samples it, never emitting BOS, with sample i
depending only on (seed, i); and ``genlit fit`` then ``genlit sample`` write the sequences to an ``.npz``."""

import math
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from genlit.cli import main
from genlit.data.token_sequences import TokenSequenceDataModule
from genlit.families.autoregressive import AutoregressiveLM
from genlit.nets.gpt import GPT

CODES, LENGTH = 8, 8  # the cyclic pattern: ids 0..7, sequences of 8


def cyclic(num: int, seed: int = 0) -> np.ndarray:
    """``num`` sequences k, k+1, ... (mod CODES) of LENGTH ids, each from a random start k: (num, LENGTH) int64."""
    starts = np.random.default_rng(seed).integers(0, CODES, num)  # (num,)
    return (starts[:, None] + np.arange(LENGTH)) % CODES


def follows_the_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """The share of steps t -> t+1 of sequences (N, L) that go up by one mod CODES."""
    return ((tokens[:, 1:] - tokens[:, :-1]) % CODES == 1).float().mean()


def tiny_gpt(vocab_size: int, block_size: int) -> AutoregressiveLM:
    torch.manual_seed(0)
    net = partial(GPT, n_layer=1, n_head=2, n_embd=16)
    optimizer = partial(torch.optim.AdamW, lr=1e-2)
    return AutoregressiveLM(net, vocab_size, block_size, weight_decay=0.0, optimizer=optimizer)


# --------------------------------------------------------------------------------------------------- data
def test_pairs_are_the_sequence_after_bos_and_the_splits_partition_the_rows(tmp_path):
    codes = np.arange(40).reshape(10, 4) % 13  # ids 0..12
    np.save(tmp_path / "codes.npy", codes)
    dm = TokenSequenceDataModule(str(tmp_path / "codes.npy"), batch_size=3, val_fraction=0.2)
    assert (dm.bos_id, dm.vocab_size, dm.block_size, dm.sequence_length) == (13, 14, 4, 4)  # before setup
    assert dm.tokenizer is None
    dm.setup("fit")
    rows = {tuple(r) for r in codes.tolist()}
    seen = []
    for split in ("train", "val"):
        x, y = dm.split(split).__getitems__(list(range(len(dm.split(split)))))
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape
        assert (x[:, 0] == 13).all() and torch.equal(x[:, 1:], y[:, :-1])  # BOS, then y shifted right by one
        seen += [tuple(r) for r in y.tolist()]
    assert sorted(seen) == sorted(rows) and len(dm.split("val")) == 2  # disjoint, all rows, ceil(10 * 0.2) held out
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (3, 4) and (x[:, 0] == 13).all()
    again = TokenSequenceDataModule(str(tmp_path / "codes.npy"), batch_size=3, val_fraction=0.2)
    again.setup("fit")
    assert torch.equal(again.split("val").codes, dm.split("val").codes)  # the same held-out rows every run


def test_grids_are_flattened_row_major_from_npz_and_pt_files(tmp_path):
    grids = np.random.default_rng(0).integers(0, 5, (6, 2, 3))  # (N, H, W)
    np.savez(tmp_path / "grids.npz", codes=grids)
    torch.save(torch.from_numpy(grids), tmp_path / "grids.pt")
    for path, key in ((tmp_path / "grids.npz", "codes"), (tmp_path / "grids.pt", None)):
        dm = TokenSequenceDataModule(str(path), key=key, batch_size=2)
        assert dm.sequence_length == 6 and torch.equal(dm.codes.long(), torch.from_numpy(grids).reshape(6, 6))


def test_the_vocabulary_is_inferred_or_given_and_bos_comes_after_it(tmp_path, monkeypatch):
    np.save(tmp_path / "codes.npy", np.array([[0, 3], [7, 2]] * 4))
    monkeypatch.setenv("CODES_DIR", str(tmp_path))
    inferred = TokenSequenceDataModule("$CODES_DIR/codes.npy", batch_size=2)  # $VARS expanded
    assert (inferred.num_codes, inferred.bos_id, inferred.vocab_size) == (8, 8, 9)
    given = TokenSequenceDataModule(str(tmp_path / "codes.npy"), num_codes=512, batch_size=2)
    assert (given.num_codes, given.bos_id, given.vocab_size) == (512, 512, 513)


def _write(tmp_path, name, array):
    path = tmp_path / name
    (np.save if name.endswith(".npy") else np.savez)(path, array)
    return str(path)


@pytest.mark.parametrize(
    "name, array, kwargs, phrase",
    [
        ("f.npy", np.zeros((4, 3), np.float32), {}, "float32 values; token ids must be integers"),
        ("r.npy", np.zeros(12, np.int64), {}, "must be (N, L) sequences or (N, H, W) grids"),
        ("n.npy", np.array([[0, -1]] * 4), {}, "negative token id -1"),
        ("v.npy", np.array([[0, 7]] * 4), {"num_codes": 5}, "give --data.num_codes 8 or more"),
        ("b.npy", np.zeros((4, 3), np.int64), {"batch_size": 4}, "fewer than batch_size 4; lower --data.batch_size"),
        ("k.npz", np.zeros((4, 3), np.int64), {"key": "codes"}, "no array 'codes' (it has arr_0); name the array"),
        ("s.txt", None, {}, "give a .npy, .npz or .pt file"),
        ("missing.npy", None, {}, "does not exist; point --data.source at"),
        ("$GENLIT_UNSET_VAR/c.npy", None, {}, "$GENLIT_UNSET_VAR in --data.source"),
    ],
)
def test_bad_sources_are_one_clear_line(tmp_path, monkeypatch, name, array, kwargs, phrase):
    monkeypatch.delenv("GENLIT_UNSET_VAR", raising=False)
    if name == "s.txt":
        (tmp_path / name).write_text("0 1 2\n")
    path = _write(tmp_path, name, array) if array is not None else str(tmp_path / name)
    source = name if name.startswith("$") else path
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        TokenSequenceDataModule(source, **{"batch_size": 2, **kwargs}).setup("fit")
    assert phrase in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------- model
def validation_loss(model: AutoregressiveLM, dm: TokenSequenceDataModule) -> float:
    """Mean next-token loss (nats) on the whole validation split."""
    val = dm.split("val")
    x, y = val.__getitems__(list(range(len(val))))  # (N, L) each
    with torch.no_grad(), model.eval_mode():
        return model.token_nll(x, y).mean().item()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-layer GPT trained for 80 steps on cyclic sequences, with its DataModule and validation losses."""
    path = tmp_path_factory.mktemp("codes") / "cyclic.npy"
    np.save(path, cyclic(512))
    dm = TokenSequenceDataModule(str(path), batch_size=32)
    dm.setup("fit")
    model = tiny_gpt(dm.vocab_size, dm.block_size)
    before = validation_loss(model, dm)
    trainer = L.Trainer(max_steps=80, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return model, dm, before, validation_loss(model, dm)


def test_a_tiny_gpt_learns_the_pattern_and_samples_it(trained):
    model, dm, before, after = trained
    assert model.tokenizer is None and model.bos_id == dm.bos_id == CODES  # the last id of codes + BOS
    # after the first id (uniform over CODES, log(8) nats), the rest is determined: the best mean is log(8) / 8
    assert before > 0.8 * math.log(CODES) and after < 0.4 * math.log(CODES), (before, after)
    tokens = model.sample(64, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (64, LENGTH) and tokens.dtype == torch.int64
    assert tokens.max() < CODES and follows_the_pattern(tokens) > 0.95
    assert len(set(tokens[:, 0].tolist())) >= CODES // 2  # the start is drawn, not always the same


def test_sample_i_depends_only_on_seed_and_i_and_options_apply(trained):
    model = trained[0]
    draw = partial(model.sample_many, seed=3)
    reference = draw(range(6), batch_size=6)
    assert torch.equal(draw(range(6), batch_size=1), reference)
    assert torch.equal(draw([4, 5]), reference[4:])
    assert not torch.equal(model.sample_many(range(6), seed=4), reference)
    assert model.sample(2, max_new_tokens=3).shape == (2, 3)
    greedy = model.sample(2, temperature=0, max_new_tokens=12)  # past one sequence: the pattern goes on
    assert follows_the_pattern(greedy) == 1.0
    with pytest.raises(ValueError, match="no tokenizer: it models token ids.*begin-of-sequence token \\(id 8\\)"):
        model.sample(1, prompt="3 4")


class LovesBos(nn.Module):
    """A net whose logits favour BOS by a mile: a sampler that does not mask BOS emits it."""

    def __init__(self, net: nn.Module, bos_id: int) -> None:
        super().__init__()
        self.inner, self.bos_id, self.context_size = net, bos_id, net.context_size

    def new_cache(self, batch_size: int):
        return self.inner.new_cache(batch_size)

    def forward(self, idx, cache=None):
        logits = self.inner(idx, cache).clone()  # (B, T, V)
        logits[..., self.bos_id] += 100.0
        return logits


def test_sampling_never_emits_bos():
    model = tiny_gpt(CODES + 1, LENGTH)
    model.net = LovesBos(model.net, CODES)
    assert model.net(torch.full((1, 1), CODES)).argmax(-1).item() == CODES  # unmasked, BOS would win
    for options in ({"temperature": 0}, {"temperature": 1.0}, {"top_k": 1}, {"top_p": 0.5}):
        tokens = model.sample(16, max_new_tokens=20, generator=torch.Generator().manual_seed(0), **options)
        assert tokens.shape == (16, 20) and tokens.max() < CODES, options


# --------------------------------------------------------------------------------------------------- CLI
CONFIG = """
seed_everything: 0
model:
  class_path: genlit.families.autoregressive.AutoregressiveLM
  init_args:
    net:
      class_path: genlit.nets.gpt.GPT
      init_args: {{n_layer: 1, n_head: 2, n_embd: 16}}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {{lr: 0.01}}
data:
  class_path: genlit.data.token_sequences.TokenSequenceDataModule
  init_args: {{source: {source}, num_codes: 10, batch_size: 16}}
trainer:
  max_steps: 5
  limit_val_batches: 1
  num_sanity_val_steps: 0
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true}}
"""


def test_fit_then_sample_writes_token_ids_to_an_npz(tmp_path, capsys):
    np.save(tmp_path / "codes.npy", cyclic(64))
    config = tmp_path / "prior.yaml"
    config.write_text(CONFIG.format(source=tmp_path / "codes.npy"))
    main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "runs")])
    (ckpt,) = (tmp_path / "runs").glob("*/checkpoints/last.ckpt")
    hparams = torch.load(ckpt, weights_only=False)["hyper_parameters"]
    assert (hparams["vocab_size"], hparams["block_size"]) == (11, LENGTH)  # 10 codes + BOS; linked from the data
    out = tmp_path / "samples" / "codes.npz"
    sample = ["sample", "--ckpt", str(ckpt), "--num", "5", "--out", str(out), "--seed", "2", "--device", "cpu"]
    main([*sample, "--batch-size", "2"])
    with np.load(out) as arrays:
        tokens = arrays["arr_0"]
        assert arrays.files == ["arr_0"]
    assert tokens.dtype == np.int64 and tokens.shape == (5, LENGTH)  # one training sequence by default
    assert tokens.min() >= 0 and tokens.max() < 10  # codes only: never BOS (10)
    main([*sample, "--batch-size", "5"])
    with np.load(out) as arrays:
        assert np.array_equal(arrays["arr_0"], tokens)  # sample i depends only on (--seed, i)
    capsys.readouterr()
    for extra, phrase in (
        (["--prompt", "x"], "no tokenizer: it models token ids"),
        (["--label", "1"], "--label is only for class-conditional models"),
    ):
        with pytest.raises(SystemExit):
            main([*sample, *extra])
        assert phrase in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt", str(ckpt), "--num", "2", "--out", str(tmp_path / "codes.txt")])
    assert "--out must end in .npz" in capsys.readouterr().err
