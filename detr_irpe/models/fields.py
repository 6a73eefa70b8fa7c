"""Configuration fields, shared by the model's configuration and the run's
(:mod:`detr_irpe.config`): a default with its command-line help, building from flat options,
and the checks, whose messages name the flag (for the command line and the Python API alike).

Plain Python (no torch).  It lives in the model package, the lowest layer, so that the model
stays self-contained and the run's configuration imports it without going up.
"""

from __future__ import annotations

from dataclasses import field, fields


def option(default, help: str, **cli):
    """A configuration field with its command-line help; ``cli`` holds argparse extras
    (``choices``, ``type``, ``metavar``, ``nargs``, ``flag`` for a differently named switch)."""
    return field(default=default, metadata={"help": help, **cli})


def own_options(config_class, options: dict) -> dict:
    """The entries of ``options`` that are fields of ``config_class``."""
    names = {f.name for f in fields(config_class)}
    return {k: v for k, v in options.items() if k in names}


class FromOptions:
    """``Config.from_options(options)``: build a configuration dataclass from flat options
    (``vars(args)``, a checkpoint's ``args``)."""

    @classmethod
    def from_options(cls, options: dict, strict: bool = False):
        """Other names in ``options`` are ignored, or with ``strict`` a ``TypeError``."""
        own = own_options(cls, options)
        unknown = sorted(set(options) - set(own))
        if strict and unknown:
            valid = sorted(f.name for f in fields(cls))
            raise TypeError(f"unknown {cls.__name__} options {unknown}; valid options: {valid}")
        return cls(**own)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"--{name}={value!r} is not one of {', '.join(map(str, choices))}")


def check_at_least(config, names, low: int) -> None:
    for name in names:
        if getattr(config, name) < low:
            raise ValueError(f"--{name} {getattr(config, name)}: must be >= {low}")


def check_within(config, names, low: float, high: float) -> None:
    """Each option in ``names`` lies in [low, high] (NaN does not)."""
    for name in names:
        if not low <= getattr(config, name) <= high:
            raise ValueError(f"--{name} {getattr(config, name)}: must be in [{low}, {high}]")
