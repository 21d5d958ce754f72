"""Apple's rules for update parameters (``mlmodel/src/Validation/ParameterValidator.cpp``,
same logic in every release tag 3.0 to 9.0)."""

from __future__ import annotations

from .findings import Finding


def int_param_findings(
    name: str, param, positive: bool, code: str = "PARAM_INVALID"
) -> list[Finding]:
    """``validateInt64Parameter``: a positive default when ``positive``; for an allowed set,
    the values are read in order up to the default (a non-positive value listed after the
    default is never looked at) and the default must be among them; for a range, positive
    bounds when ``positive``, the default inside, and min <= max."""
    default = param.defaultValue
    if positive and default <= 0:
        return [Finding(code, None, f"{name}: default {default} must be positive.")]
    kind = param.WhichOneof("AllowedValues")
    if kind == "set":
        values = list(param.set.values)
        for value in values:
            if value == default:
                return []
            if positive and value <= 0:
                return [
                    Finding(
                        code,
                        None,
                        f"{name}: the allowed set {values} has the "
                        f"non-positive value {value} before the default.",
                    )
                ]
        return [
            Finding(code, None, f"{name}: default {default} is not in the allowed set {values}.")
        ]
    if kind == "range":
        lo, hi = param.range.minValue, param.range.maxValue
        if positive and (lo <= 0 or hi <= 0):
            return [Finding(code, None, f"{name}: allowed range {lo}..{hi} must be positive.")]
        if not lo <= default <= hi:
            return [
                Finding(
                    code,
                    None,
                    f"{name}: default {default} is outside the allowed range {lo}..{hi}.",
                )
            ]
    return []


def double_param_findings(name: str, param) -> list[Finding]:
    """``validateDoubleParameter``: the default inside its range, when a range is given."""
    if param.WhichOneof("AllowedValues") == "range":
        lo, hi = param.range.minValue, param.range.maxValue
        if not lo <= param.defaultValue <= hi:
            return [
                Finding(
                    "PARAM_INVALID",
                    None,
                    f"{name}: default {param.defaultValue:g} is "
                    f"outside the allowed range {lo:g}..{hi:g}.",
                )
            ]
    return []
