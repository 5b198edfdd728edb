"""ACGAN: the auxiliary classifier's terms in both steps, what is logged and synced, and the errors."""

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import genlit.families.manual_steps as manual_steps
from genlit import ACGAN
from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from genlit.nets.mlp import MLPDiscriminator

SHAPE = (1, 28, 28)
TINY_G, TINY_D = partial(DCGANGenerator, latent_dim=8, width=8), partial(DCGANDiscriminator, width=8)


def make_acgan(**kwargs) -> ACGAN:
    return ACGAN(TINY_G, TINY_D, SHAPE, **({"num_classes": 10} | kwargs))


def loader(num: int = 16) -> DataLoader:
    torch.manual_seed(0)
    images, labels = torch.rand(num, *SHAPE) * 2 - 1, torch.arange(num) % 10
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def trainer(batches: int, **kwargs) -> L.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "accelerator": "cpu",
               "enable_model_summary": False, "limit_val_batches": 0, "log_every_n_steps": 1}  # fmt: skip
    return L.Trainer(max_steps=2 * batches, **(options | kwargs))


def hand_class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-mean log softmax(logits)[label], written out."""
    log_probs = logits - logits.exp().sum(dim=1, keepdim=True).log()
    return -log_probs[torch.arange(len(labels)), labels].mean()


@pytest.mark.parametrize("fake_class_loss", [True, False])
def test_discriminator_loss_adds_the_class_cross_entropies(fake_class_loss):
    torch.manual_seed(0)
    model = make_acgan(class_weight=0.5, fake_class_loss=fake_class_loss)
    real, fake, labels = torch.rand(6, *SHAPE) * 2 - 1, torch.rand(6, *SHAPE) * 2 - 1, torch.tensor([0, 1, 2, 3, 9, 9])
    loss, real_out, stats = model._discriminator_loss(real, fake, labels, None)
    real_adv, real_logits = model.discriminator.heads(real)  # train-mode BatchNorm: the same batch statistics
    fake_adv, fake_logits = model.discriminator.heads(fake)
    adversarial = F.softplus(-real_adv).mean() + F.softplus(fake_adv).mean()
    classes = hand_class_loss(real_logits, labels) + (hand_class_loss(fake_logits, labels) if fake_class_loss else 0)
    torch.testing.assert_close(loss, adversarial + 0.5 * classes)
    torch.testing.assert_close(real_out, real_adv)
    torch.testing.assert_close(stats["class_loss_fake"], hand_class_loss(fake_logits, labels))  # logged either way
    assert stats["class_accuracy_real"] == (real_logits.argmax(1) == labels).float().mean()


def test_generator_loss_adds_the_class_cross_entropy_of_the_requested_labels():
    torch.manual_seed(1)
    model = make_acgan(class_weight=2.0)
    fake, labels = torch.rand(5, *SHAPE) * 2 - 1, torch.tensor([4, 4, 0, 7, 1])
    loss, stats = model._generator_loss(fake, labels, None)
    adversarial, logits = model.discriminator.heads(fake)
    expected = F.softplus(-adversarial).mean() + 2.0 * hand_class_loss(logits, labels)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["g_class_loss"], hand_class_loss(logits, labels))
    assert stats["g_loss"] is loss


def test_training_logs_the_classifier_and_syncs_its_head_with_d(monkeypatch):
    """The D step back-propagates into the classifier head (and syncs it with D under DDP); the G step into G."""
    synced = []
    monkeypatch.setattr(manual_steps, "synchronize_step", lambda net, finite=True: synced.append(
        (net, {name for name, p in net.named_parameters() if p.grad is not None})) or finite)  # fmt: skip
    model = make_acgan()
    head_before = model.discriminator.aux.net[0].weight.detach().clone()
    fit = trainer(2)
    fit.fit(model, loader())
    assert [net for net, _ in synced] == [model.discriminator, model.generator] * 2
    d_grads, g_grads = synced[0][1], synced[1][1]
    assert {"aux.net.0.weight", "aux.net.0.bias", "head.linear.weight"} <= d_grads
    assert g_grads == {name for name, _ in model.generator.named_parameters()}
    assert not torch.equal(head_before, model.discriminator.aux.net[0].weight)
    for key in ("d_loss", "g_loss", "class_loss_real", "class_loss_fake", "class_accuracy_real", "g_class_loss"):
        assert torch.isfinite(fit.callback_metrics[f"train/{key}"]), key


def test_validation_reports_the_classifiers_accuracy_and_a_checkpoint_rebuilds_it(tmp_path):
    model = make_acgan()
    fit = trainer(1, default_root_dir=tmp_path, limit_val_batches=None)
    fit.fit(model, loader())
    metrics = fit.validate(model, loader(8), verbose=False)[0]
    assert 0.0 <= metrics["val/class_accuracy_real"] <= 1.0 and "val/d_loss" in metrics
    fit.save_checkpoint(tmp_path / "acgan.ckpt")
    restored = ACGAN.load_from_checkpoint(tmp_path / "acgan.ckpt", weights_only=False)
    assert restored.discriminator.aux_outputs == 10 and restored.discriminator.head.embed is None  # no projection
    rng = torch.Generator().manual_seed(3)
    torch.testing.assert_close(restored.sample(4, generator=rng), model.sample(4, generator=rng.manual_seed(3)))


def test_bad_options_are_one_clear_line():
    with pytest.raises(ValueError, match="ACGAN needs labelled data with at least 2 classes.*--data.label_column"):
        make_acgan(num_classes=0)
    with pytest.raises(ValueError, match="ACGAN is class-conditional: leave conditional true"):
        make_acgan(conditional=False)
    with pytest.raises(ValueError, match="class_weight must be >= 0"):
        make_acgan(class_weight=-1.0)
    with pytest.raises(ValueError, match="needs a discriminator with an auxiliary head .*MLPDiscriminator has none"):
        ACGAN(TINY_G, partial(MLPDiscriminator, hidden=8), SHAPE, num_classes=10)
    with pytest.raises(ValueError, match="ACGAN has no sampling option continuous; its options: truncation"):
        make_acgan().sample(2, continuous=[0.1, 0.2])
