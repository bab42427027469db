"""X-Signature verification (contract §7): the vector, every refusal reason, rotation."""

from __future__ import annotations

import json

import pytest

from webhooks.errors import SignatureError
from webhooks.signature import compute_signature, sign, verify

VECTOR_SECRET = "whsec_sandbox_test_secret"
VECTOR_T = 1763634902
VECTOR_BODY = (
    b'{"id":"evt_01JD0Q7W4R9N6M8K2H3F5T7V9X","type":"prescription.status_updated",'
    b'"created":"2026-11-20T10:15:09Z","data":{"prescription":{"id":"SRXC49F3D4F66A7",'
    b'"client_ref_id":"rx-000042","status":"signed","previous_status":"issued",'
    b'"occurred_at":"2026-11-20T10:15:08Z"}}}'
)
VECTOR_HEADER = "t=1763634902,v1=2d5b88c8910d4650ff5c62db1d3596e0d968e05ef6303f7edf4199207afe6fa4"
TOLERANCE = 300
SECRETS = (VECTOR_SECRET,)


def check(body: bytes, header: str | None, secrets=SECRETS, *, now: float = VECTOR_T) -> int:  # type: ignore[no-untyped-def]
    return verify(body, header, secrets, tolerance_s=TOLERANCE, unix_time=now)


def reason_of(body: bytes, header: str | None, secrets=SECRETS, *, now: float = VECTOR_T) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SignatureError) as info:
        check(body, header, secrets, now=now)
    return info.value.reason


def valid_v1(body: bytes = VECTOR_BODY, t: int = VECTOR_T, secret: str = VECTOR_SECRET) -> str:
    return compute_signature(secret, t, body)


# --- the contract's test vector ------------------------------------------------------


def test_contract_vector_is_reproduced_by_sign_and_verifies() -> None:
    assert sign(VECTOR_BODY, [VECTOR_SECRET], timestamp=VECTOR_T) == VECTOR_HEADER
    assert check(VECTOR_BODY, VECTOR_HEADER) == VECTOR_T


def test_vector_verifies_with_fractional_clock_and_whitespace_after_commas() -> None:
    spaced = VECTOR_HEADER.replace(",", ", ")
    assert check(VECTOR_BODY, spaced, now=VECTOR_T + 0.75) == VECTOR_T


def test_unknown_schemes_next_to_a_valid_v1_are_skipped() -> None:
    header = f"t={VECTOR_T},v0={'0' * 64},v1={valid_v1()},v2=anything"
    assert check(VECTOR_BODY, header) == VECTOR_T


# --- missing -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, ""], ids=["none", "empty"])
def test_missing_header(header: str | None) -> None:
    assert reason_of(VECTOR_BODY, header) == "missing_header"


# --- malformed --------------------------------------------------------------------------

V1 = valid_v1()

MALFORMED = {
    "non_ascii": f"t={VECTOR_T},v1={V1},note=é",
    "empty_part_middle": f"t={VECTOR_T},,v1={V1}",
    "trailing_comma": f"t={VECTOR_T},v1={V1},",
    "part_without_equals": f"t={VECTOR_T},v1={V1},garbage",
    "header_16_kib": f"t={VECTOR_T},v1={V1}," + "v0=" + "a" * (16 * 1024),
    "unknown_scheme_only": f"t={VECTOR_T},v0={V1}",
    "fullwidth_digits_t": f"t=１７６３６３４９０２,v1={V1}",
    "signed_t": f"t=+{VECTOR_T},v1={V1}",
    "negative_t": f"t=-{VECTOR_T},v1={V1}",
    "decimal_t": f"t=1.5,v1={V1}",
    "decimal_t_vector": f"t={VECTOR_T}.0,v1={V1}",
    "empty_t": f"t=,v1={V1}",
    "duplicate_t": f"t={VECTOR_T},t={VECTOR_T},v1={V1}",
    "v1_short": f"t={VECTOR_T},v1={V1[:63]}",
    "v1_long": f"t={VECTOR_T},v1={V1}0",
    "v1_uppercase_hex": f"t={VECTOR_T},v1={V1.upper()}",
    "v1_not_hex": f"t={VECTOR_T},v1={'g' * 64}",
    "v1_empty": f"t={VECTOR_T},v1=",
    "no_t": f"v1={V1}",
    "no_v1": f"t={VECTOR_T}",
    "stripe_style_name": f"timestamp={VECTOR_T},v1={V1}",
}


@pytest.mark.parametrize("header", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_header(header: str) -> None:
    assert reason_of(VECTOR_BODY, header) == "malformed_header"


def test_sixteen_kib_header_is_refused_even_when_a_v1_would_match() -> None:
    # The valid parts come first: the size alone must be enough to refuse.
    header = f"t={VECTOR_T},v1={V1}," + ",".join(["v0=" + "b" * 64] * 240)
    assert len(header) > 16 * 1024
    assert reason_of(VECTOR_BODY, header) == "malformed_header"


def test_reason_is_a_stable_attribute_and_message_never_echoes_the_body() -> None:
    with pytest.raises(SignatureError) as info:
        check(VECTOR_BODY, f"t={VECTOR_T},v1={'0' * 64}")
    assert info.value.reason == "no_match"
    assert "rx-000042" not in str(info.value)
    assert "SRXC49F3D4F66A7" not in info.value.message


# --- stale timestamps, both directions --------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [TOLERANCE + 1, -(TOLERANCE + 1), 10_000, -10_000],
    ids=["old", "future", "very_old", "far_future"],
)
def test_stale_timestamp_either_direction(offset: int) -> None:
    # ``now`` = t + offset; the signature itself is valid.
    assert reason_of(VECTOR_BODY, VECTOR_HEADER, now=VECTOR_T + offset) == "stale_timestamp"


@pytest.mark.parametrize(
    "offset", [TOLERANCE, -TOLERANCE, 0], ids=["old_edge", "future_edge", "same"]
)
def test_timestamp_exactly_at_tolerance_is_accepted(offset: int) -> None:
    assert check(VECTOR_BODY, VECTOR_HEADER, now=VECTOR_T + offset) == VECTOR_T


def test_just_past_tolerance_by_a_fraction_is_refused() -> None:
    assert (
        reason_of(VECTOR_BODY, VECTOR_HEADER, now=VECTOR_T + TOLERANCE + 0.001) == "stale_timestamp"
    )
    assert (
        reason_of(VECTOR_BODY, VECTOR_HEADER, now=VECTOR_T - TOLERANCE - 0.001) == "stale_timestamp"
    )


def test_fresh_timestamp_cannot_be_grafted_onto_an_old_signature() -> None:
    # An attacker replays a captured (body, v1) with a new t: the MAC covers t.
    header = f"t={VECTOR_T + 1000},v1={V1}"
    assert reason_of(VECTOR_BODY, header, now=VECTOR_T + 1000) == "no_match"


# --- no match ---------------------------------------------------------------------------


def test_wrong_secret() -> None:
    header = sign(VECTOR_BODY, ["whsec_someone_else"], timestamp=VECTOR_T)
    assert reason_of(VECTOR_BODY, header) == "no_match"


def test_secret_differing_only_in_case_does_not_match() -> None:
    assert reason_of(VECTOR_BODY, VECTOR_HEADER, (VECTOR_SECRET.upper(),)) == "no_match"


def test_body_reserialised_as_json_no_longer_matches() -> None:
    reserialised = json.dumps(json.loads(VECTOR_BODY)).encode()
    assert reserialised != VECTOR_BODY  # json.dumps adds spaces after ':' and ','
    assert json.loads(reserialised) == json.loads(VECTOR_BODY)
    assert reason_of(reserialised, VECTOR_HEADER) == "no_match"


@pytest.mark.parametrize("index", [0, len(VECTOR_BODY) // 2, len(VECTOR_BODY) - 1])
def test_one_flipped_byte_does_not_match(index: int) -> None:
    altered = bytearray(VECTOR_BODY)
    altered[index] ^= 0x01
    assert reason_of(bytes(altered), VECTOR_HEADER) == "no_match"


def test_trailing_newline_added_to_body_does_not_match() -> None:
    assert reason_of(VECTOR_BODY + b"\n", VECTOR_HEADER) == "no_match"


def test_empty_body_with_vector_header_does_not_match() -> None:
    assert reason_of(b"", VECTOR_HEADER) == "no_match"


# --- several v1 entries, rotation -------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 2])
def test_several_v1_entries_one_matching_is_enough(position: int) -> None:
    entries = [f"v1={'0' * 64}", f"v1={'f' * 64}"]
    entries.insert(position, f"v1={V1}")
    header = ",".join([f"t={VECTOR_T}", *entries])
    assert check(VECTOR_BODY, header) == VECTOR_T


def test_several_v1_entries_none_matching() -> None:
    header = f"t={VECTOR_T},v1={'0' * 64},v1={'f' * 64},v1={'a' * 64}"
    assert reason_of(VECTOR_BODY, header) == "no_match"


def test_rotation_platform_signs_with_new_and_old_receiver_knows_only_old() -> None:
    header = sign(VECTOR_BODY, ["whsec_new", VECTOR_SECRET], timestamp=VECTOR_T)
    assert header.count("v1=") == 2
    assert check(VECTOR_BODY, header, (VECTOR_SECRET,)) == VECTOR_T
    assert check(VECTOR_BODY, header, ("whsec_new",)) == VECTOR_T


def test_rotation_old_secret_accepted_while_listed_refused_once_removed() -> None:
    # The platform still signs with the old secret only; we already list the new one first.
    header_old = sign(VECTOR_BODY, ["whsec_old"], timestamp=VECTOR_T)
    header_new = sign(VECTOR_BODY, ["whsec_new"], timestamp=VECTOR_T)
    assert check(VECTOR_BODY, header_old, ("whsec_new", "whsec_old")) == VECTOR_T
    assert check(VECTOR_BODY, header_new, ("whsec_new", "whsec_old")) == VECTOR_T
    # Rotation finished: the old secret is removed from our list.
    assert reason_of(VECTOR_BODY, header_old, ("whsec_new",)) == "no_match"
    assert check(VECTOR_BODY, header_new, ("whsec_new",)) == VECTOR_T


def test_non_ascii_secret_is_keyed_by_its_utf8_bytes() -> None:
    import hashlib
    import hmac

    secret = "whsec_clé_ü"
    expected = hmac.new(
        secret.encode("utf-8"), f"{VECTOR_T}.".encode() + VECTOR_BODY, hashlib.sha256
    ).hexdigest()
    assert compute_signature(secret, VECTOR_T, VECTOR_BODY) == expected
    assert check(VECTOR_BODY, f"t={VECTOR_T},v1={expected}", (secret,)) == VECTOR_T
