"""The iRPE configuration: the official string ``rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}``
parsed once, at the edge (command line, config), into a typed :class:`IRPEConfig`.

Plain Python (no torch), so that the command line can check ``--enc_rpe2d`` before the
heavy imports.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

METHODS = ("euc", "quant", "cross", "product")
MODES = ("bias", "ctx")
# How the tables start: Xavier-uniform as in the official run, or zero (plain attention).
IRPE_INITS = ("xavier", "zero")
FORMAT_HELP = (
    "expected 'rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}', e.g. "
    "'rpe-2.0-product-ctx-1-k', or '' for no iRPE; ratio is a positive number "
    "(1.9, 2.0, 2.5, 3.0, ...), method one of euc|quant|cross|product, mode one of "
    "bias|ctx, shared_head 0|1, rpe_on a combination of q, k, v (q, k, v, qk, qkv, ...)"
)


@dataclass(frozen=True)
class IRPEConfig:
    """Typed iRPE configuration (one per attention; the same for q, k and v)."""

    ratio: float = 2.0
    method: str = "product"
    mode: str = "ctx"
    shared_head: bool = True
    rpe_on: str = "k"

    def __post_init__(self):
        if not (math.isfinite(self.ratio) and self.ratio > 0):
            raise ValueError(f"iRPE ratio must be a positive number, got {self.ratio}")
        if self.method not in METHODS:
            raise ValueError(f"iRPE method {self.method!r} not in {METHODS}")
        if self.mode not in MODES:
            raise ValueError(f"iRPE mode {self.mode!r} not in {MODES}")
        if not self.rpe_on or set(self.rpe_on) - set("qkv") or len(set(self.rpe_on)) != len(
            self.rpe_on
        ):
            raise ValueError(f"iRPE rpe_on {self.rpe_on!r} must be a combination of q, k, v")
        if self.mode == "bias" and "v" in self.rpe_on:
            raise ValueError("iRPE on values needs mode 'ctx': a bias on values is not defined")

    # Coefficients of the piecewise index function (paper Eq. 18).
    @property
    def alpha(self) -> float:
        return 1 * self.ratio

    @property
    def beta(self) -> float:
        return 2 * self.ratio

    @property
    def gamma(self) -> float:
        return 8 * self.ratio

    @property
    def beta_int(self) -> int:
        return int(self.beta)

    @property
    def side(self) -> int:
        """Buckets along one axis: 2B + 1."""
        return 2 * self.beta_int + 1

    @property
    def num_buckets(self) -> int:
        """Buckets of one table (for cross: of each of the row and column tables)."""
        return self.side**2 if self.method == "product" else self.side

    def to_string(self) -> str:
        return (
            f"rpe-{self.ratio}-{self.method}-{self.mode}-{int(self.shared_head)}-{self.rpe_on}"
        )


_PATTERN = re.compile(r"^rpe-([0-9]*\.?[0-9]+)-([a-z]+)-([a-z]+)-([0-9]+)-([a-z]+)$")


def parse_irpe(spec: str | IRPEConfig | None, flag: str = "--enc_rpe2d") -> IRPEConfig | None:
    """Parse the official iRPE string; ``''`` or ``None`` means no iRPE.

    Raises ``ValueError`` naming the flag, the bad value and the valid format.
    """
    if spec is None or isinstance(spec, IRPEConfig):
        return spec
    text = spec.strip()
    if text == "":
        return None
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"{flag}={spec!r} is not a valid iRPE configuration: {FORMAT_HELP}")
    ratio, method, mode, shared, rpe_on = match.groups()
    if mode == "contextual":
        mode = "ctx"
    if shared not in ("0", "1"):
        raise ValueError(f"{flag}={spec!r}: shared_head must be 0 or 1; {FORMAT_HELP}")
    try:
        return IRPEConfig(float(ratio), method, mode, shared == "1", rpe_on)
    except ValueError as err:
        raise ValueError(f"{flag}={spec!r}: {err}; {FORMAT_HELP}") from None


def canonical_irpe(spec: str | None, flag: str = "--enc_rpe2d") -> str:
    """The iRPE string in one spelling (``''`` for none), read at the edges (command line,
    checkpoint files), so that two spellings of one configuration compare equal as text."""
    irpe = parse_irpe(spec, flag)
    return irpe.to_string() if irpe is not None else ""
