"""Parsing of the CNI environment and network config (in-process, no root).

Behaviours covered:
- ``CNI_COMMAND`` must be a known command; ADD/CHECK/DEL need a well-formed ``CNI_CONTAINERID``
  and ``CNI_IFNAME`` (length, characters), ADD/CHECK a ``CNI_NETNS``; VERSION/STATUS/GC need
  none of them; ``CNI_ARGS`` is ``K=V;...``; the host end is named from ``K8S_POD_UID`` or the
  container ID;
- the config: JSON (code 6), an object with ``cniVersion`` (supported, else code 1), ``name``,
  ``type`` (code 7 otherwise); ``ipMasq`` is refused with code 2; ``ipam.type``, ``mtu``, ``mac``
  (unicast), ``macSeed``, ``logLevel`` are validated; ``runtimeConfig.mac`` wins; CHECK needs
  ``prevResult``; GC reads ``cni.dev/valid-attachments``.
"""

from __future__ import annotations

from typing import Any

import pytest

from sfc_k8s.api.naming import mac_from_seed
from sfc_k8s.cni.config import parse_cni_args, parse_config, parse_env
from sfc_k8s.cni.errors import CniError, Code
from sfc_k8s.coldstart import json_dumps

GOOD_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth1",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_UID=u-1",
}


def conf(**fields: Any) -> str:
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "net", "type": "sfc-cni"}
    base.update(fields)
    return json_dumps({k: v for k, v in base.items() if v is not None})


def code_of(call: Any) -> int:
    with pytest.raises(CniError) as info:
        call()
    return info.value.code


def test_good_env() -> None:
    env = parse_env(GOOD_ENV)
    assert (env.command, env.container_id, env.netns, env.ifname) == (
        "ADD",
        "abc123",
        "/run/netns/x",
        "eth1",
    )
    assert env.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert env.pod_uid == "u-1"
    assert parse_env({**GOOD_ENV, "CNI_ARGS": ""}).pod_uid == "abc123"


@pytest.mark.parametrize(
    "change",
    [
        {"CNI_COMMAND": None},
        {"CNI_COMMAND": "UPDATE"},
        {"CNI_CONTAINERID": None},
        {"CNI_CONTAINERID": "-starts-with-dash"},
        {"CNI_CONTAINERID": "has space"},
        {"CNI_IFNAME": None},
        {"CNI_IFNAME": "a" * 16},
        {"CNI_IFNAME": "eth/1"},
        {"CNI_IFNAME": "eth:1"},
        {"CNI_IFNAME": ".."},
        {"CNI_IFNAME": "eth 1"},
        {"CNI_NETNS": None},
        {"CNI_ARGS": "K8S_POD_UID"},
        {"CNI_ARGS": "=v"},
    ],
)
def test_bad_env_is_code_4(change: dict[str, str | None]) -> None:
    env = {**GOOD_ENV, **change}
    clean = {k: v for k, v in env.items() if v is not None}
    assert code_of(lambda: parse_env(clean)) == Code.INVALID_ENVIRONMENT


def test_del_needs_no_netns_and_version_needs_nothing() -> None:
    env = {k: v for k, v in GOOD_ENV.items() if k != "CNI_NETNS"}
    assert parse_env({**env, "CNI_COMMAND": "DEL"}).netns == ""
    for command in ("VERSION", "STATUS", "GC"):
        assert parse_env({"CNI_COMMAND": command}).command == command


def test_cni_args() -> None:
    assert parse_cni_args("A=1;;B=x=y;") == {"A": "1", "B": "x=y"}


def test_good_config() -> None:
    parsed = parse_config(
        conf(
            mtu=9000,
            macSeed="fw/eth1",
            ipam={"type": "host-local", "subnet": "10.0.0.0/24"},
            logFile="/tmp/x.log",
            logLevel="debug",
        ),
        "ADD",
    )
    assert parsed.cni_version == "1.0.0"
    assert parsed.name == "net"
    assert parsed.l3 and parsed.ipam_type == "host-local"
    assert parsed.mtu == 9000
    assert parsed.mac == mac_from_seed("fw/eth1")
    assert (parsed.log_file, parsed.log_level) == ("/tmp/x.log", "debug")


def test_l2_config_and_empty_ipam() -> None:
    assert not parse_config(conf(), "ADD").l3
    assert not parse_config(conf(ipam={}), "ADD").l3
    assert parse_config(conf(), "ADD").mac is None


def test_mac_sources() -> None:
    assert parse_config(conf(mac="02:AA:bb:cc:dd:ee"), "ADD").mac == "02:aa:bb:cc:dd:ee"
    runtime = {"mac": "0a:00:00:00:00:01"}
    both = conf(mac="02:00:00:00:00:01", runtimeConfig=runtime, macSeed="s")
    assert parse_config(both, "ADD").mac == "0a:00:00:00:00:01"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", Code.DECODING_FAILURE),
        ("{", Code.DECODING_FAILURE),
        ('{"cniVersion": "1.0.0"} trailing', Code.DECODING_FAILURE),
        ("[1, 2]", Code.INVALID_CONFIG),
        (conf(cniVersion=None), Code.INVALID_CONFIG),
        (conf(cniVersion="0.2.0"), Code.INCOMPATIBLE_VERSION),
        (conf(cniVersion="2.0.0"), Code.INCOMPATIBLE_VERSION),
        (conf(name=None), Code.INVALID_CONFIG),
        (conf(name="bad/name"), Code.INVALID_CONFIG),
        (conf(type=None), Code.INVALID_CONFIG),
        (conf(ipMasq=True), Code.UNSUPPORTED_FIELD),
        (conf(ipam="host-local"), Code.INVALID_CONFIG),
        (conf(ipam={"subnet": "10.0.0.0/24"}), Code.INVALID_CONFIG),
        (conf(ipam={"type": "../../bin/sh"}), Code.INVALID_CONFIG),
        (conf(mtu=67), Code.INVALID_CONFIG),
        (conf(mtu=65536), Code.INVALID_CONFIG),
        (conf(mtu="1500"), Code.INVALID_CONFIG),
        (conf(mtu=True), Code.INVALID_CONFIG),
        (conf(mac="02:00:00:00:00"), Code.INVALID_CONFIG),
        (conf(mac="zz:00:00:00:00:00"), Code.INVALID_CONFIG),
        (conf(mac="01:00:5e:00:00:01"), Code.INVALID_CONFIG),
        (conf(mac=42), Code.INVALID_CONFIG),
        (conf(macSeed=""), Code.INVALID_CONFIG),
        (conf(logLevel="verbose"), Code.INVALID_CONFIG),
        (conf(logFile=""), Code.INVALID_CONFIG),
        (conf(prevResult=[]), Code.INVALID_CONFIG),
    ],
)
def test_bad_config(text: str, code: int) -> None:
    assert code_of(lambda: parse_config(text, "ADD")) == code


def test_unsupported_field_names_key_and_value() -> None:
    with pytest.raises(CniError) as info:
        parse_config(conf(ipMasq=True), "ADD")
    assert "ipMasq=true" in info.value.msg


def test_check_needs_prev_result() -> None:
    assert code_of(lambda: parse_config(conf(), "CHECK")) == Code.INVALID_CONFIG
    assert parse_config(conf(prevResult={"cniVersion": "1.0.0"}), "CHECK").prev_result


def test_gc_valid_attachments() -> None:
    items = [{"containerID": "c1", "ifname": "eth1"}]
    parsed = parse_config(conf(**{"cni.dev/valid-attachments": items}), "GC")
    assert parsed.valid_attachments == [("c1", "eth1")]
    assert parse_config(conf(), "GC").valid_attachments == []
    bad = conf(**{"cni.dev/valid-attachments": [{"containerID": 1}]})
    assert code_of(lambda: parse_config(bad, "GC")) == Code.INVALID_CONFIG
