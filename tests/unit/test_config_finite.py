"""Every number a run takes is finite and bounded: inf, nan and values that overflow an
integer conversion are refused where the setting is declared, naming it (the CLI's exit 2,
the job API's 400)."""

from __future__ import annotations

import math

import pytest

from tuneforge.config import SECTIONS, Setting, SettingError, all_settings

NUMERIC = [s for s in all_settings() if s.kinds and s.kinds <= {int, float}]


def _build(s: Setting, value) -> object:
    required = {"train": "t.csv"} if s.section == "data" else {}
    return SECTIONS[s.section](**required, **{s.name: value})


@pytest.mark.parametrize("s", [s for s in NUMERIC if float in s.kinds], ids=lambda s: s.key)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308], ids=str)
def test_non_finite_and_huge_floats_are_refused(s: Setting, value: float) -> None:
    with pytest.raises(SettingError, match=rf"^{s.key} must be") as caught:
        _build(s, value)
    assert caught.value.key == s.key


@pytest.mark.parametrize("s", NUMERIC, ids=lambda s: s.key)
def test_every_number_has_an_upper_bound(s: Setting) -> None:
    assert {"le", "lt"} & set(s.meta), f"{s.key}: declare an upper bound (le=...)"
    with pytest.raises(SettingError):
        _build(s, 2**63)
