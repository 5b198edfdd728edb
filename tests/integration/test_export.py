"""``genlit export`` and loading without pickle, end to end: export, then ``genlit sample --ckpt DIR`` and
``genlit.load(DIR)`` give the same samples as the checkpoint for a GAN, a VAE, a diffusion model, a GPT with its
tokenizer and a PixelCNN; ``--format onnx`` writes a graph that ONNX Runtime runs as torch does (GAN, VAE, diffusion,
GPT) and refuses a PixelCNN in one line; the model card names the data and the metrics; fine-tuning from a checkpoint
or an export through ``genlit fit`` (``--model.init_from``, ``--model.freeze``, ``--model.lora``), resumed without
reloading, a LoRA run exported with its adapters merged; and every bad input (a tampered config, missing weights, a
bad freeze pattern or LoRA target, shapes that differ) is one clear line."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

import genlit
from genlit.checkpoints import read_checkpoint, read_exported_weights
from genlit.cli import main
from genlit.commands import onnx_export
from genlit.commands.evaluate import write_record
from genlit.families.lora import is_adapter
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import FAST, error_line, fit, mnist_args

CHECKPOINT_ONLY = "[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {save_last: true}}]"
QUICK = ["--trainer.logger", "false", "--trainer.limit_val_batches", "0", f"--trainer.callbacks={CHECKPOINT_ONLY}"]
MNIST = object()  # stands for the offline MNIST overrides
# family: (experiment, its overrides for a tiny, short run, the sampling options)
RUNS = {
    "gan": ("gan/toy_ring8.yaml", ["--trainer.max_steps", "4"], ["--num", "16"]),
    "vae": ("vae/vae_mnist.yaml", [MNIST, "--trainer.max_steps", "4", "--data.init_args.batch_size", "16"],
            ["--num", "6"]),
    "diffusion": ("diffusion/ddpm_mnist.yaml", [MNIST, "--trainer.max_steps", "2", "--data.init_args.batch_size", "8",
                  "--model.init_args.net.init_args.channels", "8", "--model.init_args.net.init_args.groups", "4"],
                  ["--num", "3", "--sampler", "DDIMSampler", "--sampler.num_steps", "3"]),
    "gpt": ("autoregressive/gpt_shakespeare_char_cpu.yaml", ["--trainer.max_steps", "3",
            "--trainer.val_check_interval", "3", "--model.init_args.net.init_args.n_layer", "1",
            "--model.init_args.net.init_args.n_embd", "32"],
            ["--prompt", "ROMEO:", "--max-new-tokens", "24", "--num", "2"]),
    "pixelcnn": ("pixelcnn/pixelcnn_mnist_binary.yaml", [MNIST, "--trainer.max_steps", "2",
                 "--data.init_args.batch_size", "8", "--model.init_args.net.init_args.channels", "8",
                 "--model.init_args.net.init_args.layers", "2", "--model.init_args.net.init_args.head_channels", "8"],
                 ["--num", "2"]),
    "flow": ("flow/glow_mnist.yaml", [MNIST, "--trainer.max_steps", "2", "--data.init_args.batch_size", "8",
             "--model.init_args.net.init_args.steps", "1", "--model.init_args.net.init_args.hidden", "8"],
             ["--num", "4"]),
    "charrnn": ("autoregressive/charrnn_shakespeare.yaml", ["--trainer.max_steps", "2", "--trainer.val_check_interval",
                "2", "--data.init_args.batch_size", "4", "--model.init_args.net.init_args.hidden_size", "32",
                "--model.init_args.net.init_args.num_layers", "1"],
                ["--prompt", "ROMEO:", "--max-new-tokens", "24", "--num", "2"]),
    "masked_lm": ("masked_lm/bert_shakespeare_char.yaml", ["--trainer.max_steps", "2", "--trainer.val_check_interval",
                  "2", "--model.init_args.net.init_args.n_layer", "1", "--model.init_args.net.init_args.n_embd", "32",
                  "--model.init_args.pll_blocks", "2", "--data.init_args.batch_size", "4"],
                  ["--prompt", "ROMEO:[MASK][MASK][MASK]", "--steps", "2", "--num", "2"]),
    "vqvae": ("vqvae/vqvae_mnist.yaml", [MNIST, "--trainer.max_steps", "2", "--data.init_args.batch_size", "8",
              "--model.init_args.encoder.init_args.width", "16", "--model.init_args.encoder.init_args.res_blocks", "1",
              "--model.init_args.decoder.init_args.width", "16", "--model.init_args.decoder.init_args.res_blocks", "1",
              "--model.init_args.quantizer.init_args.num_codes", "32", "--model.init_args.embedding_dim", "8"], None),
}  # fmt: skip
TEXT = ("gpt", "charrnn", "masked_lm")  # the families that store a tokenizer and write text samples


def run_family(name: str, root, mnist_dir, *extra: str):
    """A tiny run of family ``name`` (:data:`RUNS`) under ``root``; returns its ``last.ckpt``."""
    experiment, overrides, _ = RUNS[name]
    args = [a for o in overrides for a in (mnist_args(mnist_dir) if o is MNIST else [o])]
    return fit(experiment, root, *args, *QUICK, *extra) / "checkpoints" / "last.ckpt"


def drawn(source, out, options):
    """What ``genlit sample`` writes from ``source`` (a checkpoint or an exported folder): the array or the text."""
    main(["sample", "--ckpt", str(source), "--out", str(out), "--seed", "3", *options])
    return np.load(out)["arr_0"] if out.suffix == ".npz" else out.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir):
    """``runs(family)``: the ``last.ckpt`` of a tiny run of ``family`` (:data:`RUNS`), made on first use and shared
    by this module's tests (which only read it)."""
    made = {}

    def run(name: str):
        if name not in made:
            made[name] = run_family(name, tmp_path_factory.mktemp(name) / "runs", mnist_dir)
        return made[name]

    return run


@pytest.fixture(scope="module")
def gan_export(tmp_path_factory, runs):
    """A toy GAN run and its export."""
    ckpt, out = runs("gan"), tmp_path_factory.mktemp("gan_export") / "export"
    main(["export", "--ckpt", str(ckpt), "--out", str(out)])
    return ckpt, out


@pytest.mark.parametrize("family", [name for name, run in RUNS.items() if run[2] is not None])
def test_an_export_samples_as_its_checkpoint(family, tmp_path, runs, capsys):
    ckpt = runs(family)
    out = tmp_path / "export"
    main(["export", "--ckpt", str(ckpt), "--out", str(out)])
    files = {p.name for p in out.iterdir()}
    tokenizer = {"tokenizer.json"} if family in TEXT else set()
    assert files == {"model.safetensors", "config.json", "README.md"} | tokenizer
    suffix = ".txt" if family in TEXT else ".npz"
    options = RUNS[family][2]
    from_checkpoint = drawn(ckpt, tmp_path / f"a{suffix}", options)
    from_export = drawn(out, tmp_path / f"b{suffix}", options)
    if family in TEXT:
        assert from_checkpoint == from_export and from_checkpoint.count("ROMEO:") == 2
    else:
        assert from_checkpoint.shape[0] == int(options[1]) and np.array_equal(from_checkpoint, from_export)
    model, original = genlit.load(out), genlit.load(ckpt)
    assert type(model) is type(original) and getattr(model, "ema", None) is None  # one set of weights: the EMA's
    if family in ("gan", "vae"):  # the others' samples are slow to draw twice more
        first = original.sample(4, generator=torch.Generator().manual_seed(0))
        assert torch.equal(first, model.sample(4, generator=torch.Generator().manual_seed(0)))


def test_a_vqvae_export_encodes_and_decodes_as_its_checkpoint(tmp_path, runs):
    ckpt, out = runs("vqvae"), tmp_path / "export"
    main(["export", "--ckpt", str(ckpt), "--out", str(out)])
    model, original = genlit.load(out), genlit.load(ckpt)
    x = torch.rand(4, *original.data_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (4, 1, 28, 28)
    with torch.no_grad():
        codes = original.encode_codes(x)
        assert torch.equal(codes, model.encode_codes(x))
        assert torch.equal(original.decode_codes(codes), model.decode_codes(codes))


@pytest.mark.parametrize("family, inputs", [("gan", ["z"]), ("vae", ["z"]), ("diffusion", ["x_t", "t"]),
                                            ("gpt", ["tokens"])])  # fmt: skip
def test_an_onnx_export_runs_in_onnx_runtime_as_in_torch(family, inputs, tmp_path, runs):
    out = tmp_path / "export"
    main(["export", "--ckpt", str(runs(family)), "--out", str(out), "--format", "safetensors", "onnx"])
    assert {"model.onnx", "model.safetensors", "config.json", "README.md"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "config.json").read_text())["onnx"]
    assert [i["name"] for i in record["inputs"]] == inputs and record["check"]["max_abs_diff"] <= 1e-4
    card = (out / "README.md").read_text()
    assert "### ONNX" in card and "session.run(None" in card and record["forward"] in card
    model = genlit.load(out)  # the exported weights, as torch runs them
    graph, session = onnx_export.onnx_graph_of(model), onnx_export.inference_session(out / "model.onnx")
    inputs = onnx_export.random_inputs(graph, 3, record["max_sequence"] and record["max_sequence"] - 1, seed=11)
    with torch.no_grad(), model.eval_mode():
        expected = graph.module(*inputs).numpy()
    got = session.run(None, {spec.name: t.numpy() for spec, t in zip(graph.inputs, inputs, strict=True)})[0]
    assert np.abs(got - expected).max() <= 1e-4


def test_a_family_without_an_onnx_route_is_one_line(runs, tmp_path, capsys):
    line = error_line(capsys, "export", "--ckpt", str(runs("pixelcnn")), "--out", str(tmp_path / "x"), "--format",
                      "safetensors", "onnx")  # fmt: skip
    assert "PixelCNN has no single forward to export" in line and "GAN" in line and "Diffusion" in line
    assert list(tmp_path.iterdir()) == []


def test_a_lora_run_fine_tunes_resumes_and_exports_merged(runs, tmp_path, capsys):
    base = runs("gpt")
    capsys.readouterr()
    overrides = RUNS["gpt"][1][2:]  # the tiny net, without max_steps
    run = fit("autoregressive/gpt_shakespeare_char_cpu.yaml", tmp_path / "runs", "--trainer.max_steps", "3",
              *overrides, *QUICK, "--model.init_from", str(base), "--model.lora", "{r: 4, alpha: 8}")  # fmt: skip
    out = capsys.readouterr().out
    assert f"init_from {base}:" in out and "lora adapters" in out and "lora r=4 alpha=8 dropout=0: adapters on 4" in out
    last = run / "checkpoints" / "last.ckpt"
    first = read_checkpoint(last)["state_dict"]
    main(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(last), "--trainer.max_steps", "6", *FAST])
    out = capsys.readouterr().out
    assert "init_from" not in out and "lora r=4" in out
    resumed, pretrained = read_checkpoint(last)["state_dict"], read_checkpoint(base)["state_dict"]
    assert set(resumed) == set(first)
    for name, value in resumed.items():
        if is_adapter(name) and ".lora_B." in name and not name.startswith("ema."):
            assert not torch.equal(value, first[name]), name  # the adapters trained on
        elif not is_adapter(name) and name.startswith("net."):
            assert torch.equal(value, pretrained[name.replace(".base_layer.", ".")]), name  # the base never moved
    export = tmp_path / "export"
    main(["export", "--ckpt", str(last), "--out", str(export), "--format", "safetensors", "onnx"])
    weights, config = read_exported_weights(export), json.loads((export / "config.json").read_text())
    assert set(weights) == set(pretrained) and "lora" not in config["hyper_parameters"]  # plain names: no peft needed
    assert config["source"]["lora"]["r"] == 4
    assert "Fine-tuned with LoRA adapters (rank 4" in (export / "README.md").read_text()
    merged = genlit.load(last)  # the LoRA run as it trained, the adapters beside the base weights
    texts = merged.sample(2, generator=torch.Generator().manual_seed(5), prompt="ROMEO:", max_new_tokens=16)
    assert len(texts) == 2 and all(t.startswith("ROMEO:") for t in texts)
    assert merged.lora_adapters is not None and merged.merge_lora() is not None
    exported, seed = genlit.load(export), torch.Generator().manual_seed(5)
    options = {"prompt": "ROMEO:", "max_new_tokens": 16}
    assert exported.sample(2, generator=seed, **options) == merged.sample(2, generator=torch.Generator().manual_seed(5),
                                                                           **options)  # fmt: skip
    assert all(torch.equal(v, merged.state_dict()[k]) for k, v in exported.state_dict().items())


def test_the_model_card_names_the_data_and_the_metrics(tmp_path, runs, mnist_dir):
    ckpt = tmp_path / "last.ckpt"
    shutil.copyfile(runs("vae"), ckpt)  # its own copy: the evaluation record goes beside it
    record = {"source": str(ckpt), "extractor": "mnist_classifier@abc123", "num_samples": 1000,
              "reference": {"dataset": str(mnist_dir), "split": "test", "num_images": 1000},
              "metrics": {"fid": 41.25, "precision": 0.61}}  # fmt: skip
    write_record(ckpt.with_suffix(".eval.json"), record)  # where genlit evaluate writes it by default
    out = tmp_path / "vae_mnist"
    licences = ["--license", "apache-2.0", "--data-license", "CC BY-SA 3.0"]
    main(["export", "--ckpt", str(ckpt), "--out", str(out), *licences])
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    for line in ("library_name: genlit", "license: apache-2.0", "- vae", "- image-generation", "- fid"):
        assert line in front, front
    for text in ("`data/mnist`", "genlit.data.images.ImageDataModule", "Licence of the data: CC BY-SA 3.0",
                 "| fid | 41.25 |", "| precision | 0.61 |", "mnist_classifier@abc123", "## Model description",
                 "## Intended use", "## Limitations", "## Ethical considerations", "Bias in the data",
                 "Ownership of the training data", "Privacy", "latent_dim: 32"):  # fmt: skip
        assert text in card, text
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["dataset"] == str(mnist_dir) and "_instantiator" not in config["hyper_parameters"]


def test_fine_tuning_from_an_export_freezes_and_a_resume_does_not_reload(gan_export, tmp_path, capsys):
    _, export = gan_export
    capsys.readouterr()
    tuned = fit("gan/toy_ring8.yaml", tmp_path / "runs", "--trainer.max_steps", "4", *QUICK,
                "--model.init_from", str(export), "--model.freeze", "[generator.net.0.*]")  # fmt: skip
    out = capsys.readouterr().out
    assert f"init_from {export}: 12 tensors loaded" in out and "freeze ['generator.net.0.*']: 2 tensors" in out
    exported = genlit.load(export).state_dict()
    state = read_checkpoint(tuned / "checkpoints" / "last.ckpt")["state_dict"]
    assert torch.equal(state["generator.net.0.weight"], exported["generator.net.0.weight"])  # frozen
    assert not torch.equal(state["generator.net.2.weight"], exported["generator.net.2.weight"])  # trained
    last = tuned / "checkpoints" / "last.ckpt"
    main(["fit", "--config", str(tuned / "config.yaml"), "--ckpt_path", str(last), "--trainer.max_steps", "8", *FAST])
    out = capsys.readouterr().out
    assert "init_from" not in out and "freeze ['generator.net.0.*']" in out  # the run's weights, still frozen
    resumed = read_checkpoint(last)["state_dict"]
    assert torch.equal(resumed["generator.net.0.weight"], exported["generator.net.0.weight"])
    assert not torch.equal(resumed["generator.net.2.weight"], state["generator.net.2.weight"])


def test_a_bad_freeze_pattern_and_shapes_that_differ_are_one_line(gan_export, tmp_path, capsys):
    ckpt, _ = gan_export
    base = ["fit", "--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml"), "--trainer.default_root_dir",
            str(tmp_path), "--trainer.max_steps", "2", *FAST, *QUICK]  # fmt: skip
    line = error_line(capsys, *base, "--model.freeze", "[generator.nett.*]")
    assert "'generator.nett.*' matches no parameter; the closest parameter prefixes are generator.net.*" in line
    narrower = ["--model.init_args.generator.init_args.hidden", "64"]
    line = error_line(capsys, *base, "--model.init_from", str(ckpt), *narrower)
    assert "is (128,) in the file but (64,) here" in line and "--model.init_strict false" in line
    line = error_line(capsys, *base, "--model.init_from", str(tmp_path / "none.ckpt"))
    assert "no such checkpoint or exported folder" in line
    line = error_line(capsys, *base, "--model.lora", "{target: [generator.nett.*]}")
    assert "--model.lora target 'generator.nett.*' matches no layer; the closest layer names are" in line


@pytest.mark.parametrize("tamper, message", [
    (lambda d: (d / "config.json").write_text("{not json"), "config.json is not JSON"),
    (lambda d: edit(d, class_path="genlit.families.nope.Nope"), "which is not a genlit model class"),
    (lambda d: edit(d, class_path="collections.OrderedDict"), "which is not a genlit model class"),
    (lambda d: edit(d, generator={"class_path": "os.system", "init_args": {}}), "is refused: it names os.system"),
    (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "is not a readable safetensors file"),
], ids=["not-json", "unknown-class", "outside-genlit", "code-in-hparams", "no-weights", "corrupt-weights"])  # fmt: skip
def test_a_tampered_export_is_one_clear_line(gan_export, tamper, message, tmp_path, capsys):
    folder = tmp_path / "tampered"
    shutil.copytree(gan_export[1], folder)
    tamper(folder)
    line = error_line(capsys, "sample", "--ckpt", str(folder), "--num", "2", "--out", str(tmp_path / "s.npz"))
    assert message in line, line
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        genlit.load(folder)


def edit(folder, class_path=None, **hparams) -> None:
    """Rewrite an export's config.json with another class path or hyperparameters."""
    config = json.loads((folder / "config.json").read_text())
    config["class_path"] = class_path or config["class_path"]
    config["hyper_parameters"] |= hparams
    (folder / "config.json").write_text(json.dumps(config))


def test_export_refuses_a_bad_format_and_a_full_folder_and_leaves_nothing_half_written(gan_export, tmp_path, capsys,
                                                                                       monkeypatch):  # fmt: skip
    ckpt, export = gan_export
    line = error_line(capsys, "export", "--ckpt", str(ckpt), "--out", str(tmp_path / "x"), "--format", "tflite")
    assert "--format" in line and "safetensors" in line and "onnx" in line
    line = error_line(capsys, "export", "--ckpt", str(ckpt), "--out", str(export))
    assert "exists and is not an empty folder" in line
    import genlit.commands.export as export_command

    def broken(*args, **kwargs):
        raise ValueError("the card could not be written")

    monkeypatch.setattr(export_command, "model_card", broken)
    assert "the card could not be written" in error_line(capsys, "export", "--ckpt", str(ckpt), "--out",
                                                         str(tmp_path / "half"))  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary one
    monkeypatch.setattr(onnx_export, "_difference", lambda *args: 0.01)  # an ONNX graph that does not match torch
    line = error_line(capsys, "export", "--ckpt", str(ckpt), "--out", str(tmp_path / "onnx"), "--format", "onnx")
    assert "model.onnx of this GAN differs from torch by 0.01 (more than 0.0001)" in line
    assert list(tmp_path.iterdir()) == []


def test_push_to_hub_offline_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from genlit.commands.hub import check_hub

    with pytest.raises(ValueError, match="give a repository id owner/name"):
        check_hub("no-owner")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="Hub is offline here"):
        check_hub("alice/genlit-model")
    out = tmp_path / "export"
    with pytest.raises(SystemExit):  # checked before the checkpoint is even read: nothing written
        main(["export", "--ckpt", str(tmp_path / "any.ckpt"), "--out", str(out), "--push-to-hub", "alice/genlit-model"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offline" in err[0], err
    assert not out.exists()
