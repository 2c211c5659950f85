"""``sfc-k8s metrics-provider``'s command line: what it refuses before serving.

Covers: a TLS certificate without its key (and the reverse) is a usage error naming both
flags; a kubeconfig that does not exist stops the provider at once with one line (exit 1)
instead of answering every request with an error; the defaults (port 6443, agents on 9469).
"""

from __future__ import annotations

import pytest

from sfc_k8s.operator.metrics_provider import config_from_args, main


def test_tls_flags_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (["--tls-cert-file", "c.pem"], ["--tls-private-key-file", "k.pem"]):
        with pytest.raises(SystemExit):
            config_from_args(flags)
        assert "--tls-cert-file and --tls-private-key-file go together" in capsys.readouterr().err


def test_defaults() -> None:
    config = config_from_args(["--kubeconfig", "k"])
    assert (config.port, config.agent_port, config.tls_cert_file) == (6443, 9469, None)


def test_unusable_credentials_stop_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--kubeconfig", "/nonexistent/kubeconfig"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sfc-k8s metrics-provider: ")
    assert "/nonexistent/kubeconfig" in err
    assert len(err.strip().splitlines()) == 1
