"""Cold-start shortcuts: C modules of the standard library used directly, for ``sfc-cni``.

``sfc-cni`` is a fresh Python process for every pod interface, and its ADD latency is mostly the
interpreter's start-up and imports (the budget: ADD p50 <= 2x the Go ``ptp`` plugin's, see
docs/cni.md). Three standard-library modules on that path cost more to import than the work they
do, so the plugin uses the C modules behind them instead; this module is the one place that does
so. It is a leaf (it imports nothing of ours) so that ``sfc_k8s.naming``, which ``sfc_k8s.api``
also imports, can use it; it imports nothing at all until a shortcut is first called, except
``_sha256``.

Import costs that justify each shortcut, in milliseconds, measured with ``python -X importtime``
on this project's 2-core node (quiet, then under load from parallel test runs):

| shortcut | instead of | what that imports | what the shortcut imports |
| --- | --- | --- | --- |
| ``sha256`` | ``hashlib.sha256`` | ``hashlib`` (OpenSSL) 5.5 | ``_sha256`` 0.5 |
| ``json_loads``, ``json_dumps`` | ``json`` | ``json`` 11, ``re`` 12, ``enum`` 5-8 | ``_json`` 0.4 |
| ``setns`` (Python 3.11) | ``ctypes`` + libc | ``ctypes`` 4.6 | ``_ctypes`` 0.9 |

Python >= 3.12 has ``os.setns`` and renames ``_sha256`` to ``_sha2``; interpreters without these
C modules (PyPy) fall back to the regular modules, slower but identical in behaviour.
``tests/unit/cni/test_executable.py`` fails if the ADD path ever imports the heavy modules.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Scanner = Callable[[str, int], tuple[object, int]]

try:
    from _sha256 import sha256  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # Python >= 3.12 (_sha2), or no builtin module at all
    from hashlib import sha256

__all__ = ["json_dumps", "json_loads", "setns", "sha256"]


# --- JSON: the ``_json`` accelerator that ``json`` itself drives ------------------------------


class _ScannerContext:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> object:
        # NaN and Infinity are not JSON; the CNI spec has no use for them.
        raise ValueError(f"{name} is not valid JSON")


class _Codec:
    """The scanner and the encoder, built on first use."""

    scanner: Scanner | None = None
    encoder: Callable[[object, int], tuple[str, ...]] | None = None


def json_loads(text: str) -> object:
    """Parse one JSON document; raises ``ValueError`` (with the position) when it is invalid."""
    try:
        import _json
    except ImportError:  # pragma: no cover - CPython always has it
        return _json_loads_slowly(text)
    if _Codec.scanner is None:
        _Codec.scanner = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
    ws = " \t\n\r"
    start = len(text) - len(text.lstrip(ws))
    try:
        value, end = _Codec.scanner(text, start)
    except Exception:  # the accelerator needs json.decoder imported to phrase its errors
        return _json_loads_slowly(text)
    if end != len(text.rstrip(ws)):
        return _json_loads_slowly(text)
    return value


def _json_loads_slowly(text: str) -> object:
    """The error path: let ``json`` parse again and raise its precise ``JSONDecodeError``."""
    import json

    return json.loads(text, parse_constant=_ScannerContext.parse_constant)


def _unencodable(obj: object) -> object:
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def json_dumps(value: object) -> str:
    """Serialise ``value`` (dicts, lists, str, int, float, bool, None) compactly, ASCII only."""
    try:
        import _json
    except ImportError:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"))
    if _Codec.encoder is None:
        _Codec.encoder = _json.make_encoder(
            None, _unencodable, _json.encode_basestring_ascii, None, ":", ",", False, False, False
        )
    return "".join(_Codec.encoder(value, 0))


# --- setns(2): ``os.setns`` on 3.12+, libc's through ``_ctypes`` on 3.11 ------------------------


def _bind_setns() -> Callable[[int, int], None]:
    native = getattr(os, "setns", None)
    if native is not None:  # Python >= 3.12
        return native  # type: ignore[no-any-return]

    import _ctypes

    # The C 'int': what ctypes.c_int is, without importing ctypes.
    class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "i"

    class _LibcFunction(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _Int

    class _Process:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]

    libc_setns = _LibcFunction(("setns", _Process()))  # type: ignore[arg-type]

    def libc(fd: int, nstype: int) -> None:
        if libc_setns(fd, nstype) != 0:
            errno = _ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return libc


_bound: list[Callable[[int, int], None]] = []


def setns(fd: int, nstype: int) -> None:
    """``setns(2)``: move the calling thread into the namespace ``fd``; raises ``OSError``."""
    if not _bound:
        _bound.append(_bind_setns())
    _bound[0](fd, nstype)
