"""Conditional GET for the JSON status resources the patient page polls (RFC 9110 section 13.1.2).

A strong ``ETag`` is computed from exactly the JSON the caller would get, so
it changes whenever anything that caller sees changes (a status, a history
row, a dispatch attempt) and differs between roles that see different keys.
A matching ``If-None-Match`` gets ``304 Not Modified`` with no body. The read
still happened: the views record it in the audit trail (``read-not-modified``,
``list-not-modified``): a conditional GET costs two statements (the view, then
the audit INSERT once the answer is known), a plain GET one (the view's statement
writes its audit row).
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Response, jsonify, request


def etag_of(serialised: bytes) -> str:
    """Return the entity tag (32 hex characters, unquoted) of a serialised JSON body: the first
    128 bits of its SHA-256, hex."""
    return hashlib.sha256(serialised).hexdigest()[:32]


def respond_conditionally(body: Any) -> tuple[Response, bool]:
    """Answer ``body`` as JSON with its ``ETag``, or 304 with no body if ``If-None-Match`` matches.

    ``body`` is serialised once, by ``jsonify`` (sorted keys), and the tag is
    computed from those bytes. Uses the current Flask request's
    ``If-None-Match`` (weak comparison, as RFC 9110 section 13.1.2 requires for
    it; ``*`` matches). Sets ``Cache-Control: private, no-cache``: the answer is
    personal (no shared cache may keep it) and a client revalidates before
    reuse. Returns ``(response, not_modified)``.
    """
    response = jsonify(body)
    etag = etag_of(response.get_data())
    matches = request.if_none_match
    not_modified = bool(matches) and (matches.star_tag or matches.contains_weak(etag))
    if not_modified:
        response = Response(status=304)
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response, not_modified
