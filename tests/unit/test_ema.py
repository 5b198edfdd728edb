"""EMA of weights: fixed decay and the warm-up rule min(decay, (1 + n) / (10 + n))."""

import pytest
from torch import nn

from genlit.families.ema import make_ema


def updated(warmup: bool, values: list[float], decay: float = 0.9) -> float:
    net = nn.Linear(1, 1, bias=False)
    ema = make_ema(net, decay, warmup=warmup)
    for value in values:
        nn.init.constant_(net.weight, value)
        ema.update_parameters(net)
    return ema.module.weight.item()


def test_first_update_copies_then_fixed_decay_averages():
    assert updated(False, [2.0]) == pytest.approx(2.0)
    assert updated(False, [2.0, 1.0]) == pytest.approx(0.9 * 2 + 0.1 * 1)


def test_warmup_decay_grows_with_the_number_of_updates():
    # n = 1 averaged before the second update: decay min(0.9, 2 / 11)
    assert updated(True, [2.0, 1.0]) == pytest.approx(2 / 11 * 2 + 9 / 11 * 1)
    # much later the decay is capped at 0.9
    many = updated(True, [0.0] * 200 + [1.0])
    assert many == pytest.approx(0.1)


def test_zero_decay_disables_and_bad_decay_is_an_error():
    assert make_ema(nn.Linear(1, 1), 0.0) is None
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        make_ema(nn.Linear(1, 1), 1.0)
