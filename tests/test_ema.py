"""WeightEMA: the running average, computed by hand, and its state round trip."""

import pytest
import torch

from detr_irpe.options import parse_args
from detr_irpe.training.ema import WeightEMA


def _set(module, value):
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_average_follows_the_formula():
    model = torch.nn.Linear(2, 3)
    ema = WeightEMA(model, decay=0.9)
    expected = None
    for value in (1.0, 3.0, -2.0, 5.0):
        _set(model, value)
        ema.update(model)
        expected = value if expected is None else 0.9 * expected + 0.1 * value  # first: copy
        assert torch.allclose(ema.module.weight, torch.full((3, 2), expected), atol=1e-6)
    assert ema.updates == 4
    assert model.weight[0, 0].item() == 5.0  # the trained weights are left alone


def test_state_round_trip_continues_identically():
    model = torch.nn.Linear(2, 2)
    first = WeightEMA(model, decay=0.8)
    _set(model, 1.0)
    first.update(model)
    second = WeightEMA(torch.nn.Linear(2, 2), decay=0.8)
    second.load_state_dict(first.state_dict())
    _set(model, 4.0)
    first.update(model)
    second.update(model)
    assert second.updates == first.updates == 2
    assert torch.equal(second.module.weight, first.module.weight)


@pytest.mark.parametrize("decay", ["0", "1", "1.5", "-0.1"])
def test_bad_decay_is_one_line_naming_the_flag(decay, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--ema", decay, "--output_dir", "x", "--coco_path", "."])
    assert f"--ema {float(decay)}" in capsys.readouterr().err
