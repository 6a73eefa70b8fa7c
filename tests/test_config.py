"""The configurations are the one source of the options: every flag of main.py is a field
of exactly one of them, with the field's default, type and choices."""

from dataclasses import MISSING, fields

import pytest

from detr_irpe.config import CONFIGS, DataConfig, OptimConfig, RunConfig, Settings
from detr_irpe.models.config import PAPER_IRPE, DETRConfig
from detr_irpe.models.irpe_config import IRPEConfig, canonical_irpe
from detr_irpe.options import COMPATIBLE, UNSUPPORTED, build_parser, parse_args

CLI_ONLY = {"help", "config", "schedule", *COMPATIBLE, *UNSUPPORTED}


def _actions():
    return {a.dest: a for a in build_parser()._actions}


def test_every_field_is_one_flag_with_the_fields_default_type_and_choices():
    actions = _actions()
    seen = set()
    for config in CONFIGS.values():
        for f in fields(config):
            assert f.name not in seen, f"{f.name} belongs to two configurations"
            seen.add(f.name)
            action = actions[f.name]
            assert f.default is not MISSING and action.default == f.default, f.name
            assert action.help == f.metadata["help"], f.name
            if isinstance(f.default, bool):
                assert action.nargs == 0 and action.const is (not f.default), f.name
                continue
            if f.default is not None:
                assert action.type is type(f.default), f.name
                assert isinstance(action.type(str(f.default)), type(f.default)), f.name
            assert list(action.choices or []) == list(f.metadata.get("choices") or []), f.name
    assert set(actions) - seen == CLI_ONLY, "a flag without a configuration field"


def test_parsed_defaults_build_the_default_configurations(tmp_path):
    (tmp_path / "annotations").mkdir()
    for split in ("train", "val"):
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text("{}")
    args = parse_args(["--coco_path", str(tmp_path), "--output_dir", "out"])
    settings = Settings.from_options(vars(args))
    assert settings.model == DETRConfig()
    assert settings.optim == OptimConfig()
    assert settings.data == DataConfig(coco_path=str(tmp_path))
    assert settings.run == RunConfig(output_dir="out")


@pytest.mark.parametrize("config,options,flag", [
    (DETRConfig, {"hidden_dim": 250, "nheads": 8}, "--nheads 8"),
    (DETRConfig, {"dilation": True, "backbone": "resnet18"}, "--dilation"),
    (DETRConfig, {"dilation": True, "backbone_stride": 16}, "--backbone_stride 16"),
    (DETRConfig, {"enc_layers": 0}, "--enc_layers 0"),
    (DETRConfig, {"enc_rpe2d": "rpe-2"}, "--enc_rpe2d"),
    (DETRConfig, {"o2m_box_queries": -1}, "--o2m_box_queries -1"),
    (OptimConfig, {"epochs": 0}, "--epochs 0"),
    (OptimConfig, {"ema": 1.5}, "--ema 1.5"),
    (DataConfig, {"val_size": 0}, "--val_size 0"),
    (DataConfig, {"image_zoom": 0.0}, "--image_zoom 0.0"),
    (DataConfig, {"size_multiple": 0}, "--size_multiple 0"),
    (RunConfig, {"eval_every": 0}, "--eval_every 0"),
])
def test_each_check_names_the_flag(config, options, flag):
    with pytest.raises(ValueError, match=flag):
        config(**options)


def test_the_irpe_string_is_parsed_once_into_a_typed_value():
    config = DETRConfig(enc_rpe2d="rpe-2-product-contextual-1-k")
    assert config.irpe == IRPEConfig(2.0, "product", "ctx", True, "k")
    assert config.irpe is config.irpe  # held, not parsed on each access
    assert canonical_irpe("rpe-2-product-contextual-1-k") == PAPER_IRPE
    assert canonical_irpe("") == ""
    assert DETRConfig(enc_rpe2d="").irpe is None


def test_evaluating_a_checkpoint_takes_its_rounding_of_the_sides(tmp_path):
    import torch

    from detr_irpe.checkpoint import load_checkpoint
    from detr_irpe.training.setup import checkpoint_options

    path = tmp_path / "c.pth"
    torch.save({"model": {}, "args": {"val_size": 168, "max_size": 280, "size_multiple": 16}},
               path)
    (tmp_path / "annotations").mkdir()
    for split in ("train", "val"):
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text("{}")
    options = vars(parse_args(["--coco_path", str(tmp_path), "--output_dir", "out"]))
    ckpt = load_checkpoint(str(path))
    adopted = checkpoint_options(options, {}, ckpt, str(path), verbose=False)
    assert (adopted["val_size"], adopted["max_size"], adopted["size_multiple"]) == (168, 280, 16)
    given = checkpoint_options({**options, "size_multiple": 32}, {"size_multiple": "command line"},
                               ckpt, str(path), verbose=False)
    assert "size_multiple" not in given  # a value given on purpose wins
