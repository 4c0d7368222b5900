"""The upload body's pure parser and rewriter (gateway.policy.multipart): the canonical output,
chunk-split invariance, the exact output length, and a table of hostile bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequestError, GatewayError, PayloadTooLargeError
from gateway.policy.fields import UPLOAD_REASONS
from gateway.policy.multipart import (
    FILE_TOO_LARGE,
    INVALID_FILENAME,
    INVALID_MULTIPART,
    MAX_FILENAME_CHARS,
    MAX_PART_HEADER_BYTES,
    PURPOSE_NOT_ALLOWED,
    MultipartRewriter,
)

B = b"6be4427c0924b12fc56326256836ed37"
CT = "multipart/form-data; boundary=" + B.decode()
OURS = b"gateway-0123456789abcdef"
OWNER = "0123456789abcdef0123456789abcdef"
PURPOSES = frozenset({"assistants"})


def part(headers: bytes, body: bytes) -> bytes:
    return b"--" + B + b"\r\n" + headers + b"\r\n\r\n" + body + b"\r\n"


PURPOSE = part(b'Content-Disposition: form-data; name="purpose"', b"assistants")


def file_part(filename: bytes = b"notes.txt", ctype: bytes | None = b"text/plain") -> bytes:
    headers = b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"'
    if ctype is not None:
        headers += b"\r\nContent-Type: " + ctype
    return b"--" + B + b"\r\n" + headers + b"\r\n\r\n"


def body(
    content: bytes = b"hello", *, filename: bytes = b"notes.txt", end: bytes = b"\r\n"
) -> bytes:
    return PURPOSE + file_part(filename) + content + b"\r\n--" + B + b"--" + end


def with_file_headers(headers: bytes, content: bytes = b"x") -> bytes:
    """A body whose second part has these headers."""
    return (
        PURPOSE + b"--" + B + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n--" + B + b"--\r\n"
    )


def rewriter(
    content_type: str | None = CT, *, max_file_bytes: int = 1 << 20, hold: bool = False
) -> MultipartRewriter:
    return MultipartRewriter(
        content_type,
        boundary=OURS,
        purposes=PURPOSES,
        max_file_bytes=max_file_bytes,
        owner=lambda: OWNER,
        hold=hold,
    )


def run(raw: bytes, chunks: list[int] | None = None, **options: object) -> bytes:
    r = rewriter(**options)  # type: ignore[arg-type]
    out = bytearray()
    at = 0
    for size in chunks or [len(raw)]:
        out += r.feed(raw[at : at + size])
        at += size
    out += r.feed(raw[at:])
    out += r.finish()
    return bytes(out)


def expected(content: bytes = b"hello", filename: str = "notes.txt", end: bytes = b"\r\n") -> bytes:
    return (
        b"--" + OURS + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        b"--"
        + OURS
        + b'\r\nContent-Disposition: form-data; name="file"; filename="gwo-'
        + OWNER.encode()
        + b"-"
        + filename.encode()
        + b'"\r\nContent-Type: text/plain\r\n\r\n'
        + content
        + b"\r\n--"
        + OURS
        + b"--"
        + end
    )


def test_the_sdk_body_is_re_emitted_canonical_with_the_stamped_filename() -> None:
    assert run(body()) == expected()


def test_a_body_without_the_final_crlf_keeps_its_length_exact() -> None:
    raw = body(end=b"")
    out = run(raw)
    assert out == expected(end=b"")
    r = rewriter()
    r.feed(raw[:400])
    assert r.head_done and r.output_length(len(raw)) == len(out)


def test_utf8_filenames_pass_and_no_owner_means_no_stamp() -> None:
    raw = body(filename="résumé 2024.pdf".encode())
    r = MultipartRewriter(
        CT, boundary=OURS, purposes=PURPOSES, max_file_bytes=100, owner=lambda: None
    )
    out = r.feed(raw) + r.finish()
    assert b'filename="r\xc3\xa9sum\xc3\xa9 2024.pdf"' in out
    assert r.filename == "résumé 2024.pdf" and r.purpose == "assistants" and r.file_bytes == 5


def test_the_owner_is_read_once_and_only_when_the_file_header_is_emitted() -> None:
    reads: list[int] = []

    def owner() -> str:
        reads.append(1)
        return OWNER

    r = MultipartRewriter(
        CT, boundary=OURS, purposes=PURPOSES, max_file_bytes=100, owner=owner, hold=True
    )
    assert r.feed(body()[:-10]) == b""
    assert r.head_done and reads == []
    out = r.release()
    assert reads == [1] and OWNER.encode() in out
    out += r.feed(body()[-10:]) + r.finish()
    assert out == expected() and reads == [1]


def test_content_types_are_passed_lower_cased_or_normalised() -> None:
    def ctype(value: bytes | None) -> bytes:
        raw = PURPOSE + file_part(ctype=value) + b"x\r\n--" + B + b"--\r\n"
        out = run(raw)
        return out.split(b"Content-Type: ")[1].split(b"\r\n")[0]

    assert ctype(b"Application/PDF") == b"application/pdf"
    assert ctype(b"text/plain; charset=utf-8") == b"text/plain"
    assert ctype(None) == b"application/octet-stream"
    assert ctype(b"not a type") == b"application/octet-stream"


def test_content_that_looks_like_a_boundary_but_is_not_one_passes() -> None:
    tricky = b"--" + B + b"\r\n" + b"\r\n-" + B + b"\r\n--" + B[:-1] + b"x"
    assert run(body(tricky)) == expected(tricky)


@settings(max_examples=200, deadline=None)
@given(
    content=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30),
    hold_until=st.integers(min_value=0, max_value=4000),
)
def test_any_chunk_split_gives_the_same_output(
    content: bytes, cuts: list[int], hold_until: int
) -> None:
    raw = body(content)
    if (b"\r\n--" + B) in content or b"--" + OURS in content:
        return
    whole = run(raw)
    assert whole == expected(content)
    r = rewriter(hold=True)
    out = bytearray()
    at = 0
    for size in cuts:
        out += r.feed(raw[at : at + size])
        at += size
        if at >= hold_until and r.head_done:
            out += r.release()
    out += r.feed(raw[at:])
    out += r.release()
    out += r.finish()
    assert bytes(out) == whole
    assert r.output_length(len(raw)) == len(whole)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(min_value=1, max_value=64), max_size=12))
def test_arbitrary_bytes_are_refused_cleanly_and_split_invariantly(
    noise: bytes, cuts: list[int]
) -> None:
    """Whatever the bytes, the result is the same error code (or output) for any split."""

    def outcome(sizes: list[int]) -> bytes | str:
        try:
            return run(noise, sizes)
        except GatewayError as exc:
            return exc.code

    assert outcome(cuts) == outcome([])
    prefixed = PURPOSE + noise

    def outcome2(sizes: list[int]) -> bytes | str:
        try:
            return run(prefixed, sizes)
        except GatewayError as exc:
            return exc.code

    assert outcome2(cuts) == outcome2([])


# --------------------------------------------------------------------- hostile bodies

DISPO = b'Content-Disposition: form-data; name="file"; filename="a.txt"'
CLOSE = b"--" + B + b"--\r\n"
FILE_X = file_part() + b"x\r\n"
PLAIN = b'Content-Disposition: form-data; name="'
W = with_file_headers
HOSTILE: list[tuple[str, str | None, bytes, str]] = [
    ("no content type", None, body(), INVALID_MULTIPART),
    ("json content type", "application/json", body(), INVALID_MULTIPART),
    ("missing boundary", "multipart/form-data", body(), INVALID_MULTIPART),
    ("empty boundary", "multipart/form-data; boundary=", body(), INVALID_MULTIPART),
    ("two boundaries", CT + "; boundary=x", body(), INVALID_MULTIPART),
    ("other parameter", CT + "; charset=utf-8", body(), INVALID_MULTIPART),
    ("boundary too long", "multipart/form-data; boundary=" + "a" * 71, body(), INVALID_MULTIPART),
    ("mixed, not form-data", CT.replace("form-data", "mixed"), body(), INVALID_MULTIPART),
    ("preamble", CT, b"preamble\r\n" + body(), INVALID_MULTIPART),
    ("crlf preamble", CT, b"\r\n" + body(), INVALID_MULTIPART),
    ("padding after boundary", CT, body().replace(B + b"\r\n", B + b" \r\n", 1), INVALID_MULTIPART),
    ("empty body", CT, b"", INVALID_MULTIPART),
    ("close at once", CT, CLOSE, INVALID_MULTIPART),
    ("file before purpose", CT, FILE_X + PURPOSE + CLOSE, INVALID_MULTIPART),
    ("no file part", CT, PURPOSE + CLOSE, INVALID_MULTIPART),
    ("two purposes", CT, PURPOSE + PURPOSE + FILE_X + CLOSE, INVALID_MULTIPART),
    ("two file parts", CT, PURPOSE + FILE_X + FILE_X + CLOSE, INVALID_MULTIPART),
    ("extra part after file", CT, PURPOSE + FILE_X + PURPOSE + CLOSE, INVALID_MULTIPART),
    (
        "extra field before file",
        CT,
        PURPOSE + part(PLAIN + b'user"', b"x") + FILE_X + CLOSE,
        INVALID_MULTIPART,
    ),
    ("file without filename", CT, W(PLAIN + b'file"'), INVALID_MULTIPART),
    (
        "purpose with filename",
        CT,
        part(PLAIN + b'purpose"; filename="p"', b"assistants") + FILE_X + CLOSE,
        INVALID_MULTIPART,
    ),
    ("filename star", CT, W(PLAIN + b"file\"; filename*=UTF-8''a.txt"), INVALID_MULTIPART),
    ("duplicate name param", CT, W(PLAIN + b'file"; name="file"; filename="a"'), INVALID_MULTIPART),
    ("unquoted junk param", CT, W(DISPO + b"; x"), INVALID_MULTIPART),
    (
        "attachment disposition",
        CT,
        W(b'Content-Disposition: attachment; name="file"; filename="a"'),
        INVALID_MULTIPART,
    ),
    ("no disposition", CT, W(b"Content-Type: text/plain"), INVALID_MULTIPART),
    (
        "transfer encoding header",
        CT,
        W(DISPO + b"\r\nContent-Transfer-Encoding: base64"),
        INVALID_MULTIPART,
    ),
    (
        "two content types",
        CT,
        W(DISPO + b"\r\nContent-Type: a/b\r\nContent-Type: c/d"),
        INVALID_MULTIPART,
    ),
    ("folded header", CT, W(PLAIN + b'file";\r\n filename="a"'), INVALID_MULTIPART),
    (
        "nested multipart",
        CT,
        W(DISPO + b"\r\nContent-Type: multipart/mixed; boundary=z"),
        INVALID_MULTIPART,
    ),
    (
        "header too long",
        CT,
        W(DISPO + b"\r\nContent-Type: a/" + b"b" * MAX_PART_HEADER_BYTES),
        INVALID_MULTIPART,
    ),
    ("cr-only line ends", CT, body().replace(b"\r\n", b"\r"), INVALID_MULTIPART),
    ("lf-only line ends", CT, body().replace(b"\r\n", b"\n"), INVALID_MULTIPART),
    ("lone lf in headers", CT, W(DISPO + b"\nContent-Type: a/b"), INVALID_MULTIPART),
    (
        "purpose part not text",
        CT,
        part(PLAIN + b'purpose"\r\nContent-Type: application/json', b"assistants") + FILE_X + CLOSE,
        INVALID_MULTIPART,
    ),
    (
        "junk after a delimiter",
        CT,
        PURPOSE + file_part() + b"x\r\n--" + B + b"zz",
        INVALID_MULTIPART,
    ),
    ("epilogue", CT, body() + b"epilogue", INVALID_MULTIPART),
    ("part after the epilogue", CT, body() + b"\r\n" + PURPOSE, INVALID_MULTIPART),
    ("cut short in the file", CT, body()[:-20], INVALID_MULTIPART),
    ("cut short in the headers", CT, PURPOSE + file_part()[:-3], INVALID_MULTIPART),
    ("cut in the final crlf", CT, body()[:-1], INVALID_MULTIPART),
    (
        "the gateway's boundary in the file",
        CT,
        body(b"a\r\n--" + OURS + b"--\r\n"),
        INVALID_MULTIPART,
    ),
    ("purpose not allowed", CT, body().replace(b"assistants", b"fine-tune"), PURPOSE_NOT_ALLOWED),
    ("purpose empty", CT, body().replace(b"assistants", b""), PURPOSE_NOT_ALLOWED),
    ("purpose too long", CT, body().replace(b"assistants", b"a" * 200), PURPOSE_NOT_ALLOWED),
    (
        "purpose, trailing space",
        CT,
        body().replace(b"assistants", b"assistants "),
        PURPOSE_NOT_ALLOWED,
    ),
    ("filename ../x", CT, body(filename=b"../x"), INVALID_FILENAME),
    ("filename with slash", CT, body(filename=b"dir/x.txt"), INVALID_FILENAME),
    ("filename with backslash", CT, body(filename=b"dir\\\\x.txt"), INVALID_FILENAME),
    ("filename ..", CT, body(filename=b".."), INVALID_FILENAME),
    ("filename empty", CT, body(filename=b""), INVALID_FILENAME),
    ("filename gwo- stamp", CT, body(filename=b"gwo-" + OWNER.encode() + b"-x"), INVALID_FILENAME),
    ("filename GWO- any case", CT, body(filename=b"GWO-x.txt"), INVALID_FILENAME),
    ("filename NUL", CT, body(filename=b"a\x00b"), INVALID_FILENAME),
    ("filename escape", CT, body(filename=b"a\x1b[31mb"), INVALID_FILENAME),
    ("filename DEL", CT, body(filename=b"a\x7fb"), INVALID_FILENAME),
    ("filename C1", CT, body(filename="a\u0085b".encode()), INVALID_FILENAME),
    ("filename bidi override", CT, body(filename="a\u202egnp.exe".encode()), INVALID_FILENAME),
    ("filename not utf-8", CT, body(filename=b"caf\xe9.txt"), INVALID_FILENAME),
    ("filename too long", CT, body(filename=b"a" * (MAX_FILENAME_CHARS + 1)), INVALID_FILENAME),
]


@pytest.mark.parametrize(
    ("content_type", "raw", "code"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_bodies_are_refused_with_a_stable_code(
    content_type: str | None, raw: bytes, code: str
) -> None:
    for sizes in ([len(raw)], [1] * len(raw)):
        with pytest.raises(BadRequestError) as refused:
            run(raw, sizes, content_type=content_type)
        assert refused.value.code == code
        assert refused.value.status == 400


def test_nothing_of_a_refused_purpose_or_filename_is_emitted() -> None:
    for raw in (body().replace(b"assistants", b"fine-tune"), body(filename=b"../x")):
        r = rewriter()
        out = bytearray()
        refused = None
        try:
            for byte in raw:
                out += r.feed(bytes([byte]))
        except BadRequestError as exc:
            refused = exc
        assert refused is not None and out == b""


def test_the_close_delimiter_is_emitted_only_by_finish() -> None:
    r = rewriter()
    out = r.feed(body())
    assert b"--" + OURS + b"--" not in out
    assert r.finish() == b"\r\n--" + OURS + b"--\r\n"


def test_a_file_over_the_limit_is_413_file_too_large_as_it_streams() -> None:
    r = rewriter(max_file_bytes=1000)
    r.feed(PURPOSE + file_part() + b"x" * 900)
    with pytest.raises(PayloadTooLargeError) as refused:
        r.feed(b"x" * 200)
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        413,
        FILE_TOO_LARGE,
        "file",
    )
    assert run(body(b"x" * 1000), max_file_bytes=1000) == expected(b"x" * 1000)


def test_the_table_covers_every_upload_reason() -> None:
    codes = {h[3] for h in HOSTILE} | {FILE_TOO_LARGE}
    assert codes == UPLOAD_REASONS


def test_the_gateways_boundary_must_be_valid() -> None:
    with pytest.raises(ValueError, match="boundary"):
        MultipartRewriter(CT, boundary=b"bad boundary ", purposes=PURPOSES, max_file_bytes=1)


def test_the_least_file_size_a_declared_length_allows() -> None:
    for end in (b"\r\n", b""):
        raw = body(b"x" * 1234, end=end)
        r = rewriter()
        r.feed(raw[:300])
        assert r.least_file_bytes(len(raw)) == (1234 if end else 1232)


def test_a_quoted_boundary_and_parameter_spacing_are_accepted() -> None:
    quoted = 'Multipart/Form-Data ; boundary="' + B.decode() + '"'
    assert run(body(), content_type=quoted) == expected()
