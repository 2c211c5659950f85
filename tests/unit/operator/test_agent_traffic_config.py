"""The agent's ``--traffic-window``: the averaging window of its per-pod rates.

Covers: the default (5 s) and a value given; a window of 1 s or less refused with one line
naming the flag (the rates need a few one-second samples).
"""

from __future__ import annotations

import pytest

from sfc_k8s.operator.agent import config_from_args


def test_default_and_given() -> None:
    assert config_from_args(["--node", "n1"]).traffic_window == 5.0
    assert config_from_args(["--node", "n1", "--traffic-window", "2.5"]).traffic_window == 2.5


def test_too_short_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        config_from_args(["--node", "n1", "--traffic-window", "1"])
    assert "--traffic-window 1: expected more than 1 second" in capsys.readouterr().err
