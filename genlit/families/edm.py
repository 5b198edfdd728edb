"""EDM family: diffusion in Karras et al.'s formulation (https://arxiv.org/abs/2206.00364), beside DDPM's.

The net F is preconditioned into the denoiser D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) and trained at
noise levels ln(sigma) ~ N(P_mean, P_std^2) on the squared error of D weighted by lambda(sigma) = 1 / c_out^2,
i.e. the unit-weight error of F against its target (y - c_skip x) / c_out (:mod:`genlit.diffusion.edm`;
table 1 of the paper). Any backbone of the Diffusion family works (U-Net, DiT): it receives c_noise = ln(sigma)/4
(``noise_label_scale`` of the schedule) where a DDPM net receives the timestep.

Sampling integrates the probability flow ODE with the continuous-sigma samplers (default EDM's Heun, 18 steps =
35 network evaluations; Euler, DPM-Solver++(2M)); classifier-free guidance, the EMA, the latent-space hooks and
the training loop are the shared :class:`~genlit.families.denoising.DenoisingFamily`'s.

Metrics: ``train|val|test/loss`` (the weighted loss above) and the loss by noise-level quartile of the training
distribution (``loss_q1`` .. ``loss_q4``, q1 the least noisy quarter). No likelihood: EDM has no discrete
variational bound (the probability-flow ODE likelihood is not implemented).
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from genlit.diffusion.edm import EDMSchedule
from genlit.diffusion.samplers import Denoiser, HeunSampler, Sampler, SigmaSampler
from genlit.families.base import NonFinitePolicy, ShapeNetFactory
from genlit.families.denoising import QUARTILES, DenoisingFamily
from genlit.families.protocols import OnnxGraph, OnnxInput


class EDM(DenoisingFamily):
    """A diffusion model in the EDM formulation with the network passed in.

    Args:
        net: factory called as ``net(data_shape, num_classes)`` (``num_classes`` 0 unless conditional);
            ``net(x, c_noise, y)`` returns F, shaped like x. A conditional net has a ``null_label`` attribute.
        data_shape / num_classes: linked from the DataModule by the CLI.
        schedule: the noise levels, preconditioning and training distribution (default ``EDMSchedule()``: the
            paper's sigma_data 0.5, P_mean -1.2, P_std 1.2, sampling from 80 to 0.002 with rho 7).
        sampler: the default sampler of :meth:`sample`: a continuous-sigma one (default ``HeunSampler(18)``).
        conditional / label_dropout / guidance_scale: class conditioning and classifier-free guidance.
        ema_decay: decay of the EMA of the net used by validation, test and sampling; 0 disables it.
        optimizer / lr_scheduler: factories; the scheduler is stepped every optimizer step.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    def __init__(
        self,
        net: ShapeNetFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        schedule: EDMSchedule | None = None,
        sampler: Sampler | None = None,
        conditional: bool = False,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        ema_decay: float = 0.9999,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        levels = schedule if schedule is not None else EDMSchedule()  # hparams keep what was given
        if not isinstance(levels, EDMSchedule):
            raise ValueError(
                f"EDM takes an EDMSchedule, got {type(levels).__name__}; a discrete schedule belongs to "
                "genlit.families.diffusion.Diffusion"
            )
        default_sampler = sampler if sampler is not None else HeunSampler(18)
        _check_sampler(default_sampler)
        super().__init__(net, data_shape, num_classes, levels, default_sampler, conditional, label_dropout, ema_decay,
                         optimizer, lr_scheduler, on_nonfinite)  # fmt: skip
        self.save_hyperparameters()

    # ------------------------------------------------------------------------------------ denoising
    def denoiser(self, labels: Tensor | None = None, guidance_scale: float = 1.0) -> Denoiser:
        """``denoise(x, sigma) -> (x0_hat, eps_hat)`` for x (B, ...) = x0 + sigma n at noise levels sigma (B,),
        with the net's current weights (within :meth:`sample`, validation and test: the EMA's). Guidance mixes the
        net's outputs F, which D depends on affinely."""
        out = self.guided_net(labels, guidance_scale)
        schedule = self.schedule

        def denoise(x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
            c_skip, c_out, c_in, c_noise = schedule.preconditioning(sigma, x.dim())
            x0 = c_skip * x + c_out * out(c_in * x, c_noise)
            return x0, (x - x0) / sigma.view(c_skip.shape)

        return denoise

    def validate_sample_options(self, sampler=None, guidance_scale=None, step_progress=False) -> None:
        """The shared checks, and a continuous-sigma sampler."""
        super().validate_sample_options(sampler, guidance_scale, step_progress)
        if sampler is not None:
            _check_sampler(sampler)

    def onnx_graph(self) -> OnnxGraph:
        """The preconditioned denoiser: ``x`` (B, *latent_shape) = x0 + sigma n, ``log_sigma`` (B,) and, when
        conditional, ``labels`` (B,) (the null label ``num_classes`` included) -> ``denoised`` (B, *latent_shape),
        the x0 estimate D. The sampler's loop and guidance stay outside."""
        inputs = [OnnxInput("x", ("batch", *self.latent_shape)), OnnxInput("log_sigma", ("batch",))]
        if self.conditional:
            inputs.append(OnnxInput("labels", ("batch",), torch.long, self.null_label + 1))
        names = ", ".join(i.name for i in inputs)
        module = PreconditionedDenoiser(self.net, self.schedule)
        return OnnxGraph(module, tuple(inputs), "denoised", f"the EDM denoiser: ({names}) -> the x0 estimate")

    # ------------------------------------------------------------------------------------ objective
    def losses(self, x: Tensor, labels: Tensor | None, generator=None) -> tuple[Tensor, Tensor]:
        """Per-example loss lambda(sigma) |D(x0 + sigma n, sigma) - x0|^2 / dims (B,), computed as the unit-weight
        error of F against (x0 - c_skip x) / c_out, and the noise levels drawn (B,)."""
        z = self.encode_data(x)  # (B, *latent_shape)
        sigma = self.schedule.sample_sigmas(len(z), z.device, generator)  # (B,)
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)  # (B, *latent_shape)
        noisy = self.schedule.add_noise(z, noise, sigma)
        c_skip, c_out, c_in, c_noise = self.schedule.preconditioning(sigma, z.dim())
        target = (z - c_skip * noisy) / c_out
        out = self.net(c_in * noisy, c_noise, labels).float()  # (B, ...)
        return (out - target).square().flatten(1).mean(1), sigma

    def noise_quartile(self, levels: Tensor) -> Tensor:
        """The quartile (B,) of noise levels (B,) under the training distribution."""
        return self.schedule.quartile(levels, QUARTILES)


class PreconditionedDenoiser(nn.Module):
    """``D(x, log_sigma, labels)``: the EDM denoiser as one module (what the ONNX export writes)."""

    def __init__(self, net: nn.Module, schedule: EDMSchedule) -> None:
        super().__init__()
        self.net, self.schedule = net, schedule

    def forward(self, x: Tensor, log_sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        """The x0 estimate (B, ...) of x (B, ...) at noise levels exp(log_sigma) (B,)."""
        c_skip, c_out, c_in, c_noise = self.schedule.preconditioning(log_sigma.exp(), x.dim())
        return c_skip * x + c_out * self.net(c_in * x, c_noise, labels)


def _check_sampler(sampler: Sampler) -> None:
    if not isinstance(sampler, SigmaSampler):
        raise ValueError(
            f"EDM samples with EulerSampler, HeunSampler or DPMSolverSampler; {type(sampler).__name__} runs on the "
            "discrete timesteps of a DDPM model"
        )
