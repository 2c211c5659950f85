"""The shim's protocol (sfc_k8s.cni.wire) and the installer (sfc_k8s.cni.install), no root.

Covers: a request carries only the forwarded ``CNI_*`` variables (set-but-empty kept apart from
unset) and stdin byte for byte; malformed requests and replies are refused with a message naming
the fault; the generated C header holds the module's defaults, so the shim and the server cannot
disagree; the compiled shim answers VERSION itself and errors name the config's ``cniVersion``;
the installer copies the shim and the IPAM plugins a node lacks, leaves the node's own alone, is
idempotent, leaves no temporary file, and names a missing source; ``--uninstall`` removes the
shim (and an interrupted install's temporary file) but not the IPAM plugins.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sfc_k8s.cni import install, wire
from tests.fixtures.cni_shim import build_shim


def test_request_round_trip() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_NETNS": "", "CNI_ARGS": "K8S_POD_UID=u", "HOME": "/root"}
    data = wire.encode_request(env, b'{"a": "\\u00e9"}\0tail')
    request = wire.decode_request(data)
    assert request.env == {"CNI_COMMAND": "ADD", "CNI_NETNS": "", "CNI_ARGS": "K8S_POD_UID=u"}
    assert request.stdin == b'{"a": "\\u00e9"}\0tail'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.0 200\n", "expected b'sfc-cni/1\\n'"),
        (wire.MAGIC + b"CNI_COMMAND=ADD", "ends inside its environment"),
        (wire.MAGIC + b"LD_PRELOAD=/x.so\0\0{}", "request entry 'LD_PRELOAD'"),
        (wire.MAGIC + b"\0" + b"x" * wire.MAX_REQUEST, "expected at most"),
    ],
)
def test_bad_requests_are_named(data: bytes, message: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode_request(data)
    assert message in str(caught.value)


def test_reply_round_trip_and_errors() -> None:
    assert wire.decode_reply(wire.encode_reply(1, b'{"code": 7}\n', b"log\n")) == (
        1,
        b'{"code": 7}\n',
        b"log\n",
    )
    with pytest.raises(wire.WireError, match="announces 99 bytes"):
        wire.decode_reply(b"sfc-cni/1 0 99\n{}")
    with pytest.raises(wire.WireError, match="expected b'sfc-cni/1' CODE LENGTH"):
        wire.decode_reply(b"garbage")


def test_header_holds_the_defaults() -> None:
    header = wire.header()
    assert f'#define SFC_CNI_DEFAULT_SOCKET "{wire.DEFAULT_SOCKET}"' in header
    assert f'#define SFC_CNI_DEFAULT_SPOOL_DIR "{wire.DEFAULT_SPOOL_DIR}"' in header
    forwarded = ",".join(f'"{n}"' for n in wire.FORWARDED_ENV)
    assert f"#define SFC_CNI_FORWARDED_ENV {forwarded}" in header


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shim(tmp_path_factory.mktemp("shim"))


def _run(shim: Path, env: dict[str, str], stdin: bytes) -> tuple[int, dict[str, object]]:
    proc = subprocess.run([str(shim)], input=stdin, env=env, capture_output=True, check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_shim_answers_version_itself(shim: Path) -> None:
    code, body = _run(shim, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.3.1"}')
    assert code == 0
    assert body == {"cniVersion": "0.3.1", "supportedVersions": list(wire_versions())}
    code, body = _run(shim, {"CNI_COMMAND": "VERSION"}, b"")
    assert (code, body["cniVersion"]) == (0, "1.1.0")
    code, body = _run(shim, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "2.0.0"}')
    assert code == 1 and body["code"] == 1
    assert str(body["msg"]).startswith('cniVersion="2.0.0": expected one of 0.3.0, ')


def wire_versions() -> tuple[str, ...]:
    from sfc_k8s.cni.config import SUPPORTED_VERSIONS

    return SUPPORTED_VERSIONS


def test_shim_error_speaks_the_config_version(shim: Path, tmp_path: Path) -> None:
    conf = {"cniVersion": "0.4.0", "nested": {"agentSocket": "/not/this"}}
    conf["agentSocket"] = str(tmp_path / "absent.sock")
    code, body = _run(shim, {"CNI_COMMAND": "ADD"}, json.dumps(conf).encode())
    assert code == 1
    assert body["cniVersion"] == "0.4.0" and body["code"] == 11
    assert f"not reachable at {tmp_path / 'absent.sock'} (No such file" in str(body["msg"])


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "image"
    source.mkdir()
    for name, data in (("sfc-cni", b"shim v1"), ("host-local", b"hl"), ("static", b"st")):
        (source / name).write_bytes(data)
        (source / name).chmod(0o755)
    return source


def test_installer_fills_an_empty_dir_then_keeps_what_is_there(tmp_path: Path) -> None:
    source, bin_dir = _source(tmp_path), tmp_path / "node" / "opt" / "cni" / "bin"
    done = install.install(str(source), str(bin_dir))
    assert done == [f"{n}: installed {bin_dir / n}" for n in ("sfc-cni", "host-local", "static")]
    assert all(os.access(bin_dir / n, os.X_OK) for n in ("sfc-cni", "host-local", "static"))
    (bin_dir / "static").write_bytes(b"the node's own")
    (source / "sfc-cni").write_bytes(b"shim v2")
    done = install.install(str(source), str(bin_dir))
    assert done == [
        f"sfc-cni: installed {bin_dir / 'sfc-cni'}",
        "host-local: the node has it",
        "static: the node has it",
    ]
    assert (bin_dir / "sfc-cni").read_bytes() == b"shim v2"
    assert (bin_dir / "static").read_bytes() == b"the node's own"
    assert install.install(str(source), str(bin_dir))[0] == "sfc-cni: up to date"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["host-local", "sfc-cni", "static"]


def test_uninstall_removes_the_shim_only(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install.install(str(_source(tmp_path)), str(bin_dir))
    (bin_dir / ".sfc-cni.0.1.0-abc.12.tmp").write_bytes(b"interrupted")
    assert install.main(["--bin-dir", str(bin_dir), "--uninstall"]) == 0
    assert sorted(p.name for p in bin_dir.iterdir()) == ["host-local", "static"]
    assert install.uninstall(str(bin_dir)) == ["sfc-cni: not installed"]


def test_installer_names_a_missing_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install.main(["--bin-dir", str(tmp_path / "bin"), "--from", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sfc-k8s install-cni: {tmp_path}/sfc-cni is missing or not executable")
