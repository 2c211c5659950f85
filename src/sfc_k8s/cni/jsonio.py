"""JSON decoding and encoding for the CNI plugin, without importing the ``json`` package.

``import json`` pulls in ``re`` and ``enum`` and costs 10+ ms on a slow node, a third of the
plugin's ADD budget. The C accelerator ``_json`` that ``json`` itself uses loads in half a
millisecond, so the plugin drives it directly; on interpreters without it (PyPy) it falls back to
``json``. Only ``plugin`` and its helpers call these two functions.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Scanner = Callable[[str, int], tuple[object, int]]

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]


class _ScannerContext:
    """The attributes ``_json.make_scanner`` reads from ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> object:
        # NaN/Infinity are not JSON; the CNI spec has no use for them.
        raise ValueError(f"{name} is not valid JSON")


class _Codec:
    """The scanner and encoder, built on first use."""

    scanner: Scanner | None = None
    encoder: Callable[[object, int], tuple[str, ...]] | None = None


def loads(text: str) -> object:
    """Parse one JSON document; raises ``ValueError`` (with the position) when it is invalid."""
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    if _Codec.scanner is None:
        _Codec.scanner = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
    ws = " \t\n\r"
    start = len(text) - len(text.lstrip(ws))
    try:
        value, end = _Codec.scanner(text, start)
    except Exception:  # the accelerator needs json.decoder imported to phrase errors
        return _loads_slowly(text)
    if end != len(text.rstrip(ws)):
        return _loads_slowly(text)
    return value


def _loads_slowly(text: str) -> object:
    """The error path: let ``json`` parse again and raise its precise ``JSONDecodeError``."""
    import json

    return json.loads(text, parse_constant=_ScannerContext.parse_constant)


def _unencodable(obj: object) -> object:
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def dumps(value: object) -> str:
    """Serialise ``value`` (dicts, lists, str, int, float, bool, None) compactly, ASCII-only."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"))
    if _Codec.encoder is None:
        _Codec.encoder = _json.make_encoder(
            None, _unencodable, _json.encode_basestring_ascii, None, ":", ",", False, False, False
        )
    return "".join(_Codec.encoder(value, 0))
