"""Settings of ``sfc-k8s controller`` from flags and environment, and credentials resolution.

Covers: defaults suited to a Deployment; every environment variable; flags overriding the
environment; standalone vs peering; namespaces; bad values refused with a usage error; random,
non-zero peering priorities unless one is given; credentials from a kubeconfig and a clear
SettingsError without any; the ``controller|agent`` dispatcher refusing anything else.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sfc_k8s.operator import cli
from sfc_k8s.operator.settings import (
    ControllerConfig,
    LogFormat,
    SettingsError,
    connection_info,
    controller_config_from_args,
)


def test_defaults() -> None:
    config = controller_config_from_args([], {})
    assert config == ControllerConfig()
    assert config.clusterwide
    assert config.peering == "sfc-k8s-controller"
    assert config.require_programmed
    assert config.log_format is LogFormat.JSON


def test_environment(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    env = {
        "KUBECONFIG": str(kubeconfig),
        "SFC_K8S_NAMESPACES": "a,b,,a",
        "SFC_K8S_PEERING": "p1",
        "SFC_K8S_PRIORITY": "7",
        "SFC_K8S_PEERING_LIFETIME": "30",
        "SFC_K8S_REQUIRE_PROGRAMMED": "false",
        "SFC_K8S_LIVENESS": "http://0.0.0.0:1/h",
        "SFC_K8S_LOG_FORMAT": "plain",
    }
    config = controller_config_from_args([], env)
    assert config == ControllerConfig(
        kubeconfig=str(kubeconfig),
        namespaces=("a", "b"),
        peering="p1",
        priority=7,
        peering_lifetime=30,
        require_programmed=False,
        liveness="http://0.0.0.0:1/h",
        log_format=LogFormat.PLAIN,
    )


def test_flags_override_environment() -> None:
    env = {"SFC_K8S_PEERING": "p1", "SFC_K8S_LOG_FORMAT": "plain", "SFC_K8S_NAMESPACES": "x"}
    config = controller_config_from_args(
        ["--standalone", "--log-format", "full", "-A", "--priority", "3"], env
    )
    assert config.peering is None
    assert config.log_format is LogFormat.FULL
    assert config.clusterwide
    assert config.effective_priority() == 3
    config = controller_config_from_args(["-n", "a", "--namespace", "b"], {})
    assert config.namespaces == ("a", "b")


@pytest.mark.parametrize(
    "argv",
    [
        ["--kubeconfig", "/nonexistent/kubeconfig"],
        ["--peering-lifetime", "0"],
        ["--priority", "-1"],
        ["--log-format", "xml"],
        ["--standalone", "--peering", "p"],
        ["-A", "-n", "a"],
    ],
)
def test_bad_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        controller_config_from_args(argv, {})
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_random_priorities_differ_per_replica() -> None:
    priorities = {ControllerConfig().effective_priority() for _ in range(50)}
    assert len(priorities) > 45
    assert all(p > 0 for p in priorities)


def test_connection_from_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "local",
                "contexts": [{"name": "local", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t0k"}}],
            }
        )
    )
    info = connection_info(path)
    assert (info.server, info.token) == ("http://127.0.0.1:6443", "t0k")
    path.write_text("current-context: nowhere\n")
    with pytest.raises(SettingsError, match="current-context"):
        connection_info(path)


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SettingsError, match="pass --kubeconfig"):
        connection_info(None)


def test_dispatcher_refuses_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["operator"]) == 2
    assert "usage: sfc-k8s {controller|agent}" in capsys.readouterr().err
