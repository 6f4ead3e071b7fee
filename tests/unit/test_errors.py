"""The error vocabulary (issue 23): one hierarchy, the HTTP status and the wire code of each
class, and codes that stay the exact strings old peers send and expect."""

from __future__ import annotations

import ast
import inspect
import sys

import msgpack
import pytest

from cadenza import errors, links, speaker
from cadenza.control import auth, http
from cadenza.errors import ApiErrorCode, CadenzaError
from cadenza.protocol import messages
from cadenza.protocol.errors import ErrorCode
from cadenza.protocol.messages import ErrorReply

# Every code a peer of any version has sent or compared, as it was spelled before the enum.
WIRE_CODES = {
    "bad-request",
    "unsupported",
    "not-found",
    "unauthenticated",
    "auth-failed",
    "revoked",
    "banned",
    "throttled",
    "busy",
    "bad-reply",
}

EXPECTED = {
    errors.CadenzaError: (500, "internal"),
    errors.BadRequest: (400, "bad-request"),
    errors.Unsupported: (400, "unsupported"),
    errors.NotFound: (404, "not-found"),
    errors.UnknownLink: (404, "not-found"),
    errors.BadPosition: (404, "not-found"),
    errors.Conflict: (409, "conflict"),
    errors.Unauthenticated: (401, "unauthenticated"),
    errors.AuthFailed: (401, "auth-failed"),
    errors.Revoked: (401, "revoked"),
    errors.Forbidden: (403, "forbidden"),
    errors.Banned: (403, "banned"),
    errors.Throttled: (429, "throttled"),
    errors.Unavailable: (503, "unavailable"),
    errors.Busy: (503, "busy"),
    errors.BadReply: (502, "bad-reply"),
    # Subclasses that live beside what raises them.
    links.LinkError: (400, "bad-request"),
    links.IdOutOfRange: (404, "not-found"),
    auth.PairingRefused: (429, "throttled"),
}


def error_classes() -> list[type[CadenzaError]]:
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ]


def test_every_class_is_a_cadenza_error_with_its_status_and_code() -> None:
    assert set(error_classes()) <= set(EXPECTED)
    for cls, (status, code) in EXPECTED.items():
        assert issubclass(cls, CadenzaError), cls
        assert (cls.http_status, cls.code) == (status, code), cls
        assert type(cls.code) is ApiErrorCode, cls


def test_the_hierarchy() -> None:
    assert issubclass(errors.Unsupported, errors.BadRequest)
    assert issubclass(errors.UnknownLink, errors.NotFound)
    assert issubclass(errors.BadPosition, errors.NotFound)
    assert issubclass(errors.Revoked, errors.AuthFailed)
    assert issubclass(errors.Busy, errors.Unavailable)
    assert issubclass(links.IdOutOfRange, links.LinkError)
    assert issubclass(links.LinkError, errors.BadRequest)
    assert issubclass(auth.PairingRefused, errors.Throttled)
    assert issubclass(http.ApiError, errors.BadRequest)


def test_the_builtin_bases_kept_for_callers_that_catch_them() -> None:
    assert issubclass(errors.BadRequest, ValueError)
    assert issubclass(links.LinkError, ValueError)
    assert issubclass(errors.NotFound, LookupError)
    assert issubclass(speaker.UnknownLink, LookupError)


@pytest.mark.parametrize("stray", [KeyError, IndexError, LookupError, ValueError, RuntimeError])
def test_a_builtin_error_is_no_cadenza_error(stray: type[Exception]) -> None:
    """What the control API relies on to answer a bug with a 500, not a 404, 409 or 400."""
    assert not issubclass(stray, CadenzaError)


def test_the_speaker_exports_the_same_classes() -> None:
    assert speaker.UnknownLink is errors.UnknownLink
    assert speaker.BadPosition is errors.BadPosition
    assert speaker.Unavailable is errors.Unavailable


def test_the_module_docstring_draws_every_class() -> None:
    lines = (errors.__doc__ or "").splitlines()

    def drawn(name: str) -> list[str]:
        return [x for x in lines if "── " in x and x.split("── ")[1].split()[0].endswith(name)]

    for cls, (status, code) in EXPECTED.items():
        if cls is CadenzaError:
            continue
        assert len(drawn(cls.__name__)) == 1, cls
        if cls.__module__ == "cadenza.errors":
            assert f"{status}  {code}" in drawn(cls.__name__)[0]
    assert any(x.strip().startswith("CadenzaError ") and "500  internal" in x for x in lines)


def test_instances_carry_their_details() -> None:
    bad = errors.BadRequest("field 'volume' must be an integer", field="volume")
    assert (str(bad), bad.field) == ("field 'volume' must be an integer", "volume")
    assert errors.BadRequest("no field").field is None
    throttled = errors.Throttled("slow down", retry_after=1.5)
    assert (str(throttled), throttled.retry_after) == ("slow down", 1.5)
    refused = auth.PairingRefused("full", 12.0)
    assert (str(refused), refused.retry_after, refused.http_status) == ("full", 12.0, 429)
    too_big = http.ApiError(413, "request body over 65536 bytes")
    assert (too_big.http_status, str(too_big)) == (413, "request body over 65536 bytes")
    assert errors.BadRequest.http_status == 400  # the instance's status, not the class's
    with pytest.raises(links.IdOutOfRange) as info:
        links.parse("cadenza:track:zzzzzzzzzzzzzzzzzzzzzz")
    assert info.value.http_status == 404


# --- the codes on the wire ----------------------------------------------------------------------


def test_the_codes_are_the_strings_peers_used() -> None:
    values = {member.value for member in ApiErrorCode}
    assert values >= WIRE_CODES
    # The others are named for the control API's cases and never sent by any version yet.
    assert values - WIRE_CODES == {"conflict", "forbidden", "unavailable", "internal"}


@pytest.mark.parametrize("code", list(ApiErrorCode))
def test_a_code_is_its_string(code: ApiErrorCode) -> None:
    text = code.value
    assert isinstance(code, str)
    assert code == text and text == code
    assert hash(code) == hash(text)
    assert {text: 1}[code] == 1 and {code: 1}[text] == 1
    assert str(code) == f"{code}" == "%s" % code == text  # noqa: UP031 - as logging does
    assert code in (text,) and text in (code,)


@pytest.mark.parametrize("code", list(ApiErrorCode))
def test_an_error_reply_encodes_to_the_bytes_of_the_plain_string(code: ApiErrorCode) -> None:
    plain = code.value
    before = msgpack.packb(
        [ErrorReply.TYPE_ID, {"code": plain, "message": "why"}], use_bin_type=True
    )
    assert messages.encode(ErrorReply(code, "why")) == before
    assert messages.encode(ErrorReply(plain, "why")) == before
    assert msgpack.packb(code, use_bin_type=True) == msgpack.packb(plain, use_bin_type=True)
    decoded = messages.decode(before)
    assert isinstance(decoded, ErrorReply)
    # What arrives is a plain str (a code this version does not know must arrive too) that
    # equals its member.
    assert type(decoded.code) is str and decoded.code == code


def test_an_unknown_code_from_a_newer_peer_still_decodes() -> None:
    data = msgpack.packb(
        [ErrorReply.TYPE_ID, {"code": "gone-fishing", "message": ""}], use_bin_type=True
    )
    reply = messages.decode(data)
    assert isinstance(reply, ErrorReply) and reply.code == "gone-fishing"
    assert reply.code not in set(ApiErrorCode)


def test_the_connection_codes_are_another_enum() -> None:
    """``ErrorCode`` (RESET/GOAWAY, numeric) and ``ApiErrorCode`` (ErrorReply, text) share
    no member: neither can be passed where the other is meant without a type error."""
    assert not set(ErrorCode) & set(ApiErrorCode)
    assert all(isinstance(c, int) and not isinstance(c, str) for c in ErrorCode)


# --- the bottom layer ---------------------------------------------------------------------------


def test_the_module_imports_only_the_standard_library_and_the_protocol() -> None:
    tree = ast.parse(inspect.getsource(errors))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module or "")
    for name in imported:
        top = name.split(".")[0]
        assert (
            top in sys.stdlib_module_names
            or name == "__future__"
            or name == "cadenza.protocol"
            or name.startswith("cadenza.protocol.")
        ), name
