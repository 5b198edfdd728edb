"""The diffusion LightningModule: objective, EMA, guidance, the bound and its options."""

from functools import partial

import lightning as L
import pytest
import torch

from genlit.data.tensors import TensorPairs, tensor_loader
from genlit.diffusion import DDIMSampler, DDPMSampler, LinearSchedule, Sampler
from genlit.families.diffusion import Diffusion
from genlit.nets.unet import UNet

SHAPE = (1, 8, 8)
TINY_NET = partial(UNet, channels=8, channel_mults=(1, 2), attention_resolutions=(4,), groups=4)


def make_model(**kwargs) -> Diffusion:
    options = {"schedule": LinearSchedule(20), "sampler": DDIMSampler(4), "ema_decay": 0.5} | kwargs
    return Diffusion(TINY_NET, SHAPE, num_classes=3, **options)


def perturb(model: Diffusion) -> Diffusion:
    """Random weights everywhere (the U-Net starts as a zero predictor, which hides bugs)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    if model.ema is not None:
        model.ema.module.load_state_dict(model.net.state_dict())
    return model


def loader(n=32, batch=8):
    x = torch.randint(256, (n, *SHAPE)) / 127.5 - 1
    return tensor_loader(TensorPairs(x, torch.randint(3, (n,))), batch_size=batch, train=True)


def fit(model, steps=4):
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=2, accelerator="cpu", log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(model, loader(), loader(16))
    return trainer


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_training_logs_the_loss_by_quartile_and_moves_the_ema(prediction):
    model = make_model(prediction=prediction, min_snr_gamma=5.0)
    before = [p.clone() for p in model.ema.module.parameters()]
    trainer = fit(model)
    metrics = trainer.callback_metrics
    for stage in ("train", "val"):
        for q in range(1, 5):
            assert torch.isfinite(metrics[f"{stage}/loss_q{q}"]), (stage, q)
    assert torch.isfinite(metrics["val/loss"])
    after = list(model.ema.module.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert any(moved)
    assert not all(torch.equal(a, b) for a, b in zip(model.net.parameters(), after, strict=True))


def test_quartiles_split_timesteps_by_noise_level():
    model = make_model()
    loss, t = torch.arange(8.0), torch.tensor([0, 4, 5, 9, 10, 14, 15, 19])  # T = 20: quarters of 5 steps
    model._update_quartiles("train", loss, t)
    means = model.train_quartiles.compute().tolist()
    assert means == [0.5, 2.5, 4.5, 6.5]


def test_label_dropout_uses_the_null_label():
    model = make_model(conditional=True, label_dropout=0.5)
    y = torch.zeros(10_000, dtype=torch.long)
    dropped = (model._training_labels(y) == model.null_label).float().mean().item()
    assert model.null_label == 3 and dropped == pytest.approx(0.5, abs=0.03)


def test_guidance_mixes_conditional_and_null_outputs():
    model = perturb(make_model(conditional=True)).eval()
    x, t, y = torch.randn(4, *SHAPE), torch.full((4,), 10), torch.tensor([0, 1, 2, 0])
    null = torch.full_like(y, model.null_label)
    net = model.net
    cond, uncond = net(x, t, y), net(x, t, null)
    for scale, expected in [(1.0, cond), (0.0, uncond), (3.0, uncond + 3 * (cond - uncond))]:
        x0, eps = model.denoiser(y, scale, clip=False)(x, t)
        assert torch.allclose(eps, expected, atol=1e-5), scale


def test_sample_shapes_range_and_determinism():
    model = perturb(make_model(conditional=True)).eval()
    a = model.sample(5, generator=torch.Generator().manual_seed(3), guidance_scale=2.0)
    b = model.sample(5, generator=torch.Generator().manual_seed(3), guidance_scale=2.0)
    assert a.shape == (5, *SHAPE) and a.abs().max() <= 1 and torch.equal(a, b)
    c = model.sample(3, labels=torch.tensor([0, 1, 2]), sampler=DDPMSampler(), use_ema=False)
    assert c.shape == (3, *SHAPE)


def test_unconditional_model_refuses_labels_and_conditional_needs_classes():
    with pytest.raises(ValueError, match="unconditional; sample it without labels"):
        make_model().sample(2, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="conditional=True needs labelled data"):
        Diffusion(TINY_NET, SHAPE, num_classes=0, conditional=True)


def test_bound_is_positive_and_its_estimate_costs_nll_timesteps_plus_one_passes():
    model = perturb(make_model(nll_timesteps=None)).eval()
    x = torch.randint(256, (4, *SHAPE)) / 127.5 - 1
    calls = []
    model.net.register_forward_hook(lambda *args: calls.append(1))
    exact = model.variational_bound(x, generator=torch.Generator().manual_seed(0))
    assert exact.shape == (4,) and torch.isfinite(exact).all() and (exact > 0).all()
    assert len(calls) == 20  # L_0 and L_1 .. L_19
    model.hparams.nll_timesteps = 3
    estimate = model.variational_bound(x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(estimate).all() and len(calls) == 20 + 4


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prediction": "score"}, "unknown prediction target 'score'"),
        ({"min_snr_gamma": 0.0}, "min_snr_gamma must be > 0"),
        ({"label_dropout": 1.0}, r"label_dropout must be in \[0, 1\)"),
        ({"nll_timesteps": 0}, "nll_timesteps must be >= 1"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        make_model(**options)


class TwoEvaluationSampler(Sampler):
    """A sampler with its own loop that calls the denoiser twice per step (Heun-like: a DDIM step to the next
    timestep, then the average of the two eps estimates), as a second-order solver would."""

    def __init__(self, num_steps: int = 3) -> None:
        super().__init__(num_steps)
        self.calls = 0

    def sample(self, denoise, x, schedule, rng=None, callback=None):
        timesteps = self.timesteps(schedule)
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            ab_t, ab_prev = schedule.alpha_bar_at(torch.tensor([t, t_prev]))
            _, eps = denoise(x, torch.full((len(x),), t))
            x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
            guess = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
            if t_prev >= 0:
                eps = (eps + denoise(guess, torch.full((len(x),), t_prev))[1]) / 2
            x = ab_prev.sqrt() * (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt() + (1 - ab_prev).sqrt() * eps
            self.calls += 2 if t_prev >= 0 else 1
        return x


def test_a_sampler_that_owns_its_loop_needs_no_change_in_the_family():
    model = perturb(make_model(conditional=True)).eval()
    sampler = TwoEvaluationSampler(3)
    samples = model.sample(4, sampler=sampler, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, *SHAPE) and torch.isfinite(samples).all()
    assert sampler.calls == 5  # 2 + 2 + 1 evaluations over 3 steps
