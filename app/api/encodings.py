"""Content-Encoding of webhook bodies: gzip and deflate are decoded, never past a size limit.

The decoded size is bounded while decoding (zlib's `max_length`), so a small body that inflates to
gigabytes costs at most `limit` + 1 bytes of memory before it is refused (413). HTTP's `deflate` is
the zlib format (RFC 9110 §8.4.1.2), but some senders send raw deflate: both are accepted, as
browsers and curl do. Several gzip members one after another are one body (RFC 1952 §2.2)."""
from __future__ import annotations

import zlib

from app.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

GZIP_WBITS = 16 + zlib.MAX_WBITS
ZLIB_WBITS = zlib.MAX_WBITS
RAW_DEFLATE_WBITS = -zlib.MAX_WBITS


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo the codings a `Content-Encoding` header lists (applied in that order, so undone in reverse).

    Raises UnsupportedMediaType (415) for a coding other than gzip, x-gzip, deflate or identity,
    PayloadTooLarge (413) when the decoded body would exceed `limit` bytes, and BadRequest (400)
    when the bytes are not of the coding they claim."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, GZIP_WBITS, limit, coding)
        elif coding == "deflate":
            body = _inflate(body, ZLIB_WBITS if _zlib_header(body) else RAW_DEFLATE_WBITS, limit, coding)
        else:
            raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported: send gzip, deflate "
                                       f"or an unencoded body")
    return body


def _zlib_header(body: bytes) -> bool:
    """Whether `body` starts with a zlib header (RFC 1950 §2.2: method 8, header check bits)."""
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


def _inflate(body: bytes, wbits: int, limit: int, coding: str) -> bytes:
    out = bytearray()
    pending = body
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            while not inflater.eof:
                chunk = inflater.decompress(pending, limit + 1 - len(out))
                out += chunk
                if len(out) > limit:
                    raise PayloadTooLarge(f"body is larger than {limit} bytes once {coding}-decoded")
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise BadRequest(f"body is not valid {coding}: it ends early")
            pending = inflater.unused_data
            if not pending:
                return bytes(out)
            if wbits != GZIP_WBITS:
                raise BadRequest(f"body is not valid {coding}: data after its end")
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {coding}: {exc}") from None
