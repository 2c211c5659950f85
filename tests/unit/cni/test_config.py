"""Parsing of the CNI environment and network config (in-process, no root).

Behaviours covered:
- ``CNI_COMMAND`` must be a known command; ADD/CHECK/DEL need a well-formed ``CNI_CONTAINERID``
  and ``CNI_IFNAME`` (length, characters), ADD/CHECK a ``CNI_NETNS``; VERSION/STATUS/GC need
  none of them; ``CNI_ARGS`` is ``K=V;...``; the host end is named from ``K8S_POD_UID`` or the
  container ID;
- the config: JSON (code 6), an object with ``cniVersion`` (supported, else code 1), ``name``,
  ``type`` (code 7 otherwise); ``ipMasq`` is refused with code 2; ``ipam.type``, ``mtu``, ``mac``
  (unicast), ``macSeed``, ``logLevel`` are validated; ``runtimeConfig.mac`` wins; CHECK needs
  ``prevResult``; GC reads ``cni.dev/valid-attachments``;
- every error of the environment (code 4) and of the config (codes 1, 2, 6, 7) says exactly the
  field, the value given (as JSON, cut when long; "is missing" when absent) and the expected
  form, and nothing of the parser's internals (issue 16: a bad MAC leaked ``int()``'s message);
  the JSON decoder's position goes to ``details``.
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


ID = "a letter or digit, then letters, digits, '_', '.' or '-'"
IFNAME = (
    "an interface name of 1 to 15 bytes, not '.' or '..', without '/', ':', whitespace or"
    " control characters"
)
COMMANDS = "one of ADD, DEL, CHECK, VERSION, STATUS, GC"


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        ({"CNI_COMMAND": None}, f"CNI_COMMAND is missing: expected {COMMANDS}"),
        ({"CNI_COMMAND": "UPDATE"}, f'CNI_COMMAND="UPDATE": expected {COMMANDS}'),
        ({"CNI_CONTAINERID": None}, f"CNI_CONTAINERID is missing: expected a container ID: {ID}"),
        ({"CNI_CONTAINERID": "-x"}, f'CNI_CONTAINERID="-x": expected a container ID: {ID}'),
        ({"CNI_CONTAINERID": "a b"}, f'CNI_CONTAINERID="a b": expected a container ID: {ID}'),
        ({"CNI_IFNAME": None}, f"CNI_IFNAME is missing: expected {IFNAME}"),
        ({"CNI_IFNAME": ""}, f'CNI_IFNAME="": expected {IFNAME}'),
        ({"CNI_IFNAME": "a" * 16}, f'CNI_IFNAME="{"a" * 16}": expected {IFNAME}'),
        ({"CNI_IFNAME": "eth/1"}, f'CNI_IFNAME="eth/1": expected {IFNAME}'),
        ({"CNI_IFNAME": "eth:1"}, f'CNI_IFNAME="eth:1": expected {IFNAME}'),
        ({"CNI_IFNAME": ".."}, f'CNI_IFNAME="..": expected {IFNAME}'),
        ({"CNI_IFNAME": "eth 1"}, f'CNI_IFNAME="eth 1": expected {IFNAME}'),
        ({"CNI_NETNS": None},
         "CNI_NETNS is missing: expected the pod's network namespace path (ADD)"),
        ({"CNI_NETNS": ""}, 'CNI_NETNS="": expected the pod\'s network namespace path (ADD)'),
        ({"CNI_ARGS": "K8S_POD_UID"},
         "CNI_ARGS=\"K8S_POD_UID\": expected KEY=VALUE items separated by ';'"),
        ({"CNI_ARGS": "A=1;=v"}, "CNI_ARGS=\"A=1;=v\": expected KEY=VALUE items separated by ';'"),
    ],
)  # fmt: skip
def test_bad_env_names_field_value_and_form(change: dict[str, str | None], msg: str) -> None:
    env = {**GOOD_ENV, **change}
    clean = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(CniError) as info:
        parse_env(clean)
    assert (info.value.code, info.value.msg) == (Code.INVALID_ENVIRONMENT, msg)


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


VERSIONS = "one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
MAC = 'a unicast MAC address: six hex octets, the first even, like "02:00:5e:10:00:01"'
OBJECT = "a JSON object (the network configuration)"
NAME = f"a network name: {ID}"
IPAM = 'an object with a "type", like {"type": "host-local"}'
IPAM_TYPE = 'the name of an IPAM plugin, like "host-local"'
MTU = "an integer from 68 to 65535"
ATTACHMENT = 'an object with string "containerID" and "ifname"'
LONG = {"type": "host-local", "ranges": [[{"subnet": "10.200.0.0/16"}], [{"subnet": "fd00::/64"}]]}


@pytest.mark.parametrize(
    ("text", "code", "msg"),
    [
        ("", Code.DECODING_FAILURE, f'stdin="": expected {OBJECT}'),
        ("{", Code.DECODING_FAILURE, f'stdin="{{": expected {OBJECT}'),
        ('{"cniVersion": "1.0.0"} x', Code.DECODING_FAILURE,
         f'stdin="{{\\"cniVersion\\": \\"1.0.0\\"}} x": expected {OBJECT}'),
        ("[1, 2]", Code.INVALID_CONFIG, f"stdin=[1,2]: expected {OBJECT}"),
        (conf(cniVersion=None), Code.INVALID_CONFIG, f"cniVersion is missing: expected {VERSIONS}"),
        (conf(cniVersion=1), Code.INVALID_CONFIG, f"cniVersion=1: expected {VERSIONS}"),
        (conf(cniVersion="0.2.0"), Code.INCOMPATIBLE_VERSION,
         f'cniVersion="0.2.0": expected {VERSIONS}'),
        (conf(cniVersion="2.0.0"), Code.INCOMPATIBLE_VERSION,
         f'cniVersion="2.0.0": expected {VERSIONS}'),
        (conf(name=None), Code.INVALID_CONFIG, f"name is missing: expected {NAME}"),
        (conf(name="bad/name"), Code.INVALID_CONFIG, f'name="bad/name": expected {NAME}'),
        (conf(type=None), Code.INVALID_CONFIG, 'type is missing: expected "sfc-cni"'),
        (conf(type=""), Code.INVALID_CONFIG, 'type="": expected "sfc-cni"'),
        (conf(ipMasq=True), Code.UNSUPPORTED_FIELD,
         "ipMasq=true: expected false or absent: sfc-cni never masquerades"),
        (conf(ipam="host-local"), Code.INVALID_CONFIG, f'ipam="host-local": expected {IPAM}'),
        (conf(ipam={"subnet": "10.0.0.0/24"}), Code.INVALID_CONFIG,
         f"ipam.type is missing: expected {IPAM_TYPE}"),
        (conf(ipam={"type": "../../bin/sh"}), Code.INVALID_CONFIG,
         f'ipam.type="../../bin/sh": expected {IPAM_TYPE}'),
        (conf(ipam=[LONG]), Code.INVALID_CONFIG,
         'ipam=[{"type":"host-local","ranges":[[{"subnet":"10.200.0.0/16"}],[{"subnet":"fd00...:'
         f" expected {IPAM}"),
        (conf(mtu=67), Code.INVALID_CONFIG, f"mtu=67: expected {MTU}"),
        (conf(mtu=65536), Code.INVALID_CONFIG, f"mtu=65536: expected {MTU}"),
        (conf(mtu="1500"), Code.INVALID_CONFIG, f'mtu="1500": expected {MTU}'),
        (conf(mtu=True), Code.INVALID_CONFIG, f"mtu=true: expected {MTU}"),
        (conf(mac="02:00:00:00:00"), Code.INVALID_CONFIG, f'mac="02:00:00:00:00": expected {MAC}'),
        (conf(mac="02:00:5e:10:00:0g"), Code.INVALID_CONFIG,
         f'mac="02:00:5e:10:00:0g": expected {MAC}'),
        (conf(mac="02-00-5e-10-00-01"), Code.INVALID_CONFIG,
         f'mac="02-00-5e-10-00-01": expected {MAC}'),
        (conf(mac="01:00:5e:00:00:01"), Code.INVALID_CONFIG,
         f'mac="01:00:5e:00:00:01": expected {MAC}'),
        (conf(mac=42), Code.INVALID_CONFIG, f"mac=42: expected {MAC}"),
        (conf(runtimeConfig={"mac": "zz"}), Code.INVALID_CONFIG,
         f'runtimeConfig.mac="zz": expected {MAC}'),
        (conf(macSeed=""), Code.INVALID_CONFIG, 'macSeed="": expected a non-empty string'),
        (conf(macSeed=5), Code.INVALID_CONFIG, "macSeed=5: expected a non-empty string"),
        (conf(logLevel="verbose"), Code.INVALID_CONFIG,
         'logLevel="verbose": expected one of error, info, debug'),
        (conf(logLevel=["info"]), Code.INVALID_CONFIG,
         'logLevel=["info"]: expected one of error, info, debug'),
        (conf(logFile=""), Code.INVALID_CONFIG, 'logFile="": expected a file path'),
        (conf(prevResult=[]), Code.INVALID_CONFIG,
         "prevResult=[]: expected an object: the result the ADD returned"),
    ],
)  # fmt: skip
def test_bad_config_names_field_value_and_form(text: str, code: int, msg: str) -> None:
    with pytest.raises(CniError) as info:
        parse_config(text, "ADD")
    assert (info.value.code, info.value.msg) == (code, msg)


def test_undecodable_config_gives_the_position_in_details() -> None:
    with pytest.raises(CniError) as info:
        parse_config('{"name": }', "ADD")
    assert info.value.details == "Expecting value: line 1 column 10 (char 9)"


def test_check_needs_prev_result() -> None:
    with pytest.raises(CniError) as info:
        parse_config(conf(), "CHECK")
    assert (info.value.code, info.value.msg) == (
        Code.INVALID_CONFIG,
        "prevResult is missing: expected the result the ADD returned (CHECK needs it)",
    )
    assert parse_config(conf(prevResult={"cniVersion": "1.0.0"}), "CHECK").prev_result


@pytest.mark.parametrize(
    ("items", "msg"),
    [
        ({"containerID": "c1"}, 'cni.dev/valid-attachments={"containerID":"c1"}: expected a list,'
         f" each item {ATTACHMENT}"),
        ([{"containerID": "c1", "ifname": "eth1"}, {"containerID": 1}],
         f'cni.dev/valid-attachments[1]={{"containerID":1}}: expected {ATTACHMENT}'),
        (["c1/eth1"], f'cni.dev/valid-attachments[0]="c1/eth1": expected {ATTACHMENT}'),
    ],
)  # fmt: skip
def test_gc_bad_valid_attachments(items: object, msg: str) -> None:
    with pytest.raises(CniError) as info:
        parse_config(conf(**{"cni.dev/valid-attachments": items}), "GC")
    assert (info.value.code, info.value.msg) == (Code.INVALID_CONFIG, msg)


def test_gc_valid_attachments() -> None:
    items = [{"containerID": "c1", "ifname": "eth1"}]
    parsed = parse_config(conf(**{"cni.dev/valid-attachments": items}), "GC")
    assert parsed.valid_attachments == [("c1", "eth1")]
    assert parse_config(conf(), "GC").valid_attachments == []
