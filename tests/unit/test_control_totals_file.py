"""The control totals file: exact amounts, one entry per table and month, and errors that
name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrier_node.config import load_control_totals, load_node_config
from carrier_node.data.control_totals import ControlTotal, ControlTotals
from fedoversight.errors import ConfigError
from fedoversight.periods import Month


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_amounts_are_exact_cents(tmp_path: Path) -> None:
    totals = ControlTotals.load(
        write(
            tmp_path / "t.toml",
            '[[pharmacy_claims]]\nmonth = "2026-02"\nclaims = 7\npaid_cents = 123456789012\n'
            '[[medical_claims]]\nmonth = "2026-01"\nclaims = 3\npaid = "90071992547409.93"\n'
            '[[medical_claims]]\nmonth = "2025-12"\nclaims = 0\npaid = "-12.5"\n',
        )
    )
    assert totals.entries == (
        ControlTotal("medical_claims", Month(2025, 12), 0, -1250),
        ControlTotal("medical_claims", Month(2026, 1), 3, 9007199254740993),  # beyond a float
        ControlTotal("pharmacy_claims", Month(2026, 2), 7, 123456789012),
    )
    assert totals.of("pharmacy_claims") == (totals.entries[2],)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[medical_claims]]\nmonth = "2026-01"\nclaims = 1\npaid = 10.25\n',
            "medical_claims[0].paid",
        ),
        ('[[medical_claims]]\nmonth = "2026-01"\nclaims = 1\npaid = "10.255"\n', "at most two"),
        ('[[medical_claims]]\nmonth = "2026-01"\nclaims = 1\n', "exactly one of paid"),
        (
            '[[medical_claims]]\nmonth = "2026-01"\nclaims = 1\npaid = "1"\npaid_cents = 100\n',
            "exactly one of paid",
        ),
        ('[[medical_claims]]\nmonth = "January"\nclaims = 1\npaid_cents = 1\n', "YYYY-MM"),
        ('[[medical_claims]]\nmonth = "2026-01"\nclaims = -1\npaid_cents = 1\n', "claims"),
        ('[[medical_claims]]\nmonth = "2026-01"\nclaims = 1.0\npaid_cents = 1\n', "claims"),
        (
            '[[eligibility]]\nmonth = "2026-01"\nclaims = 1\npaid_cents = 1\n',
            "eligibility: unknown key",
        ),
        (
            '[[medical_claims]]\nmonth = "2026-01"\nclaims = 1\npaid_cents = 1\n'
            '[[medical_claims]]\nmonth = "2026-01"\nclaims = 2\npaid_cents = 2\n',
            "month 2026-01 is declared twice",
        ),
        ("medical_claims = [", "not valid TOML"),
    ],
)
def test_a_wrong_file_is_refused_naming_what(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        ControlTotals.load(write(tmp_path / "t.toml", text))
    assert expected in refused.value.detail
    assert "http" not in refused.value.detail


def test_the_node_config_names_the_file_relative_to_itself(tmp_path: Path) -> None:
    write(
        tmp_path / "totals.toml", '[[medical_claims]]\nmonth = "2026-01"\nclaims = 2\npaid = "3"\n'
    )
    config = load_node_config(
        write(
            tmp_path / "node.toml",
            'carrier_id = "c1"\ncoordinator = "x:1"\ninsecure = true\ndata_dir = "d"\n'
            'control_totals_file = "totals.toml"\n',
        )
    )
    assert config.control_totals_file == tmp_path / "totals.toml"
    assert load_control_totals(config).entries == (
        ControlTotal("medical_claims", Month(2026, 1), 2, 300),
    )
    assert not load_control_totals(config.model_copy(update={"control_totals_file": None}))
