from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery_robot.credentials import PIN_PARAMS, ScryptParams, SecretHash
from delivery_robot.handoff_credentials import (
    CredentialPolicy,
    HandoffCredentials,
    IssuedCredentials,
    Method,
    VerifyError,
    make_qr_token,
)

KEY = b"k" * 32
CHEAP = ScryptParams(log2_n=4, r=1, p=1)  # the real PIN cost is ~0.1 s per hash
T0 = 1_000.0
TTL = 600.0
LOCKOUT = 300.0


def _book(key: bytes = KEY) -> HandoffCredentials:
    return HandoffCredentials(CredentialPolicy(secret_key=key, ttl_s=TTL, max_attempts=5,
                                               lockout_s=LOCKOUT, pin_hash_cost=CHEAP,
                                               token_hash_cost=CHEAP))


def _issue(book: HandoffCredentials, order_id: str = "ord-1") -> IssuedCredentials:
    return book.issue(order_id, now=T0)


def _other_pin(pin: str) -> str:
    return f"{(int(pin) + 1) % 10**6:06d}"


def test_issue_returns_codes_once_and_stores_only_salted_hashes() -> None:
    book = _book()
    issued = _issue(book)
    assert re.fullmatch(r"\d{6}", issued.pin)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", issued.qr_token)
    assert len(issued.qr_token) < 100
    assert issued.expires_at == int(T0 + TTL)
    assert issued.pin not in repr(issued)
    assert issued.qr_token not in repr(issued)
    record = book.record("ord-1")
    assert record is not None
    # The order store's hash format, so the store can keep these records as they are.
    assert isinstance(record.pin_hash, SecretHash)
    assert record.pin_hash.encoded.startswith("scrypt$ln=4,r=1,p=1$")
    assert record.qr_hash.encoded.startswith("scrypt$ln=4,r=1,p=1$")
    stored = repr(book.records()) + record.pin_hash.encoded + record.qr_hash.encoded
    assert issued.pin not in stored
    assert issued.qr_token not in stored
    # Keyed and salted: the plain PIN does not match its hash, and re-issuing the same PIN
    # for another order would give a different hash.
    assert not record.pin_hash.verify(issued.pin)
    other = _issue(book, "ord-2").qr_token
    assert record.qr_hash.encoded != book.record("ord-2").qr_hash.encoded  # type: ignore[union-attr]
    assert not record.qr_hash.verify(other)


def test_default_policy_uses_the_slow_pin_hash_end_to_end() -> None:
    book = HandoffCredentials(CredentialPolicy(secret_key=KEY))
    issued = book.issue("ord-1", now=T0)
    record = book.record("ord-1")
    assert record is not None
    assert record.pin_hash.encoded.startswith(f"scrypt$ln={PIN_PARAMS.log2_n},")
    assert book.verify("ord-1", Method.PIN, issued.pin, T0 + 1).granted


def test_pin_is_granted_once_then_already_used() -> None:
    book = _book()
    issued = _issue(book)
    result = book.verify("ord-1", Method.PIN, issued.pin, now=T0 + 10)
    assert result.granted
    assert result.error is None
    assert result.error_code == ""
    assert result.attempts_left == 5
    again = book.verify("ord-1", Method.PIN, issued.pin, now=T0 + 11)
    assert not again.granted
    assert again.error_code == "already_used"
    # One-time per order: the QR token is spent by the PIN's grant too.
    assert book.verify("ord-1", Method.QR, issued.qr_token, T0 + 12).error is (
        VerifyError.ALREADY_USED)


def test_qr_token_is_granted_once_and_a_replay_is_refused() -> None:
    book = _book()
    issued = _issue(book)
    assert book.verify("ord-1", Method.QR, f"  {issued.qr_token}\n", T0 + 1).granted
    replay = book.verify("ord-1", Method.QR, issued.qr_token, T0 + 2)
    assert replay.error is VerifyError.ALREADY_USED


def test_five_wrong_pins_lock_out_then_the_cool_down_restores_attempts() -> None:
    book = _book()
    issued = _issue(book)
    wrong = _other_pin(issued.pin)
    for left in (4, 3, 2, 1):
        result = book.verify("ord-1", Method.PIN, wrong, T0 + 1)
        assert (result.error, result.attempts_left, result.lockout) == (
            VerifyError.WRONG_CREDENTIAL, left, None)
    fifth = book.verify("ord-1", Method.PIN, wrong, T0 + 2)
    assert fifth.error is VerifyError.LOCKED_OUT
    assert fifth.attempts_left == 0
    assert fifth.lockout_remaining_s == LOCKOUT
    assert fifth.lockout is not None
    assert (fifth.lockout.order_id, fifth.lockout.until, fifth.lockout.failed_attempts,
            fifth.lockout.lockouts) == ("ord-1", T0 + 2 + LOCKOUT, 5, 1)
    # Even the right PIN is refused during the cool-down, and no second lockout event is made.
    during = book.verify("ord-1", Method.PIN, issued.pin, T0 + 102)
    assert during.error is VerifyError.LOCKED_OUT
    assert during.lockout is None
    assert during.lockout_remaining_s == pytest.approx(LOCKOUT - 100)
    status = book.status("ord-1", T0 + 102)
    assert status is not None
    assert status.attempts_left == 0
    after = book.status("ord-1", T0 + 2 + LOCKOUT)
    assert after is not None
    assert (after.attempts_left, after.lockout_remaining_s) == (5, 0.0)
    assert book.verify("ord-1", Method.PIN, wrong, T0 + 2 + LOCKOUT).attempts_left == 4
    assert book.verify("ord-1", Method.PIN, issued.pin, T0 + 2 + LOCKOUT + 1).granted


def test_wrong_tries_count_across_pin_and_forged_qr() -> None:
    book = _book()
    issued = _issue(book)
    forged = make_qr_token(b"x" * 32, "ord-1", issued.expires_at, b"\x00" * 12)
    for _ in range(2):
        assert book.verify("ord-1", Method.QR, forged, T0 + 1).error is (
            VerifyError.WRONG_CREDENTIAL)
    for _ in range(2):
        book.verify("ord-1", Method.PIN, _other_pin(issued.pin), T0 + 1)
    assert book.verify("ord-1", Method.QR, forged, T0 + 1).error is VerifyError.LOCKED_OUT


def test_expired_credentials_are_refused_and_cost_no_attempt() -> None:
    book = _book()
    issued = book.issue("ord-1", now=T0, expires_at=T0 + 60.5)  # whole seconds, rounded down
    assert issued.expires_at == int(T0 + 60)
    for method, text in ((Method.PIN, issued.pin), (Method.QR, issued.qr_token)):
        result = book.verify("ord-1", method, text, T0 + 60)
        assert result.error is VerifyError.EXPIRED
        assert result.attempts_left == 5
    assert book.verify("ord-1", Method.PIN, issued.pin, T0 + 59.9).granted


def test_qr_token_for_another_order_is_wrong_order() -> None:
    book = _book()
    _issue(book, "ord-1")
    other = _issue(book, "ord-2")
    result = book.verify("ord-1", Method.QR, other.qr_token, T0 + 1)
    assert result.error is VerifyError.WRONG_ORDER
    assert result.attempts_left == 5
    assert book.verify("ord-2", Method.QR, other.qr_token, T0 + 1).granted


@pytest.mark.parametrize("how", ["flip_mac", "extend_expiry", "other_key", "swap_order"])
def test_forged_qr_tokens_are_wrong_credentials(how: str) -> None:
    book = _book()
    issued = _issue(book)
    prefix, order, expiry, nonce, mac = issued.qr_token.split(".")
    if how == "flip_mac":
        token = ".".join((prefix, order, expiry, nonce, ("B" if mac[0] == "A" else "A") + mac[1:]))
    elif how == "extend_expiry":
        token = ".".join((prefix, order, str(int(expiry) + 3600), nonce, mac))
    elif how == "other_key":
        token = make_qr_token(b"z" * 32, "ord-1", issued.expires_at, b"\x01" * 12)
    else:  # a genuine MAC of order 2 pasted onto order 1's claims
        other = _issue(book, "ord-2").qr_token.split(".")
        token = ".".join((prefix, order, other[2], other[3], other[4]))
    result = book.verify("ord-1", Method.QR, token, T0 + 1)
    assert result.error is VerifyError.WRONG_CREDENTIAL
    assert result.attempts_left == 4


@pytest.mark.parametrize(("method", "text"), [
    (Method.PIN, "12345"), (Method.PIN, "1234567"), (Method.PIN, "12a456"), (Method.PIN, ""),
    (Method.PIN, "１２３４５６"), (Method.PIN, "9" * 10_000), (Method.QR, "hello"),
    (Method.QR, "h1.a.b.c.d"), (Method.QR, "h2.b3JkLTE.1600.AAAAAAAAAAAAAAAA.AAAA"), (7, "123456"),
])
def test_malformed_input_is_refused_without_costing_an_attempt(method: int, text: str) -> None:
    book = _book()
    _issue(book)
    result = book.verify("ord-1", method, text, T0 + 1)
    assert result.error is VerifyError.MALFORMED
    assert result.attempts_left == 5


def test_non_canonical_token_encoding_is_malformed() -> None:
    book = _book()
    issued = _issue(book)
    prefix, order, expiry, nonce, mac = issued.qr_token.split(".")
    padded = ".".join((prefix, order + "=", expiry, nonce, mac))
    assert book.verify("ord-1", Method.QR, padded, T0 + 1).error is VerifyError.MALFORMED


def test_unknown_order() -> None:
    result = _book().verify("nope", Method.PIN, "123456", T0)
    assert result.error is VerifyError.UNKNOWN_ORDER
    assert not result.granted


def test_reissue_replaces_the_codes_but_keeps_a_lockout() -> None:
    book = _book()
    old = _issue(book)
    new = book.issue("ord-1", now=T0 + 5)
    assert book.verify("ord-1", Method.QR, old.qr_token, T0 + 6).error is (
        VerifyError.WRONG_CREDENTIAL)
    for _ in range(4):
        book.verify("ord-1", Method.PIN, _other_pin(new.pin), T0 + 6)
    assert book.verify("ord-1", Method.PIN, _other_pin(new.pin), T0 + 6).error is (
        VerifyError.LOCKED_OUT)
    newest = book.issue("ord-1", now=T0 + 7)
    assert book.verify("ord-1", Method.PIN, newest.pin, T0 + 8).error is VerifyError.LOCKED_OUT


def test_rearm_makes_a_used_credential_valid_again() -> None:
    book = _book()
    issued = _issue(book)
    assert not book.rearm("ord-1")  # not used yet
    assert book.verify("ord-1", Method.PIN, issued.pin, T0 + 1).granted
    assert book.rearm("ord-1")
    assert book.verify("ord-1", Method.QR, issued.qr_token, T0 + 2).granted
    assert not book.rearm("unknown")


def test_records_restore_on_another_book_with_the_same_key_only() -> None:
    book = _book()
    issued = _issue(book)
    robot = HandoffCredentials(book.policy, records=book.records())
    assert robot.verify("ord-1", Method.PIN, issued.pin, T0 + 1).granted
    wrong_key = HandoffCredentials(
        replace(book.policy, secret_key=b"q" * 32), records=book.records())
    assert wrong_key.verify("ord-1", Method.PIN, issued.pin, T0 + 1).error is (
        VerifyError.WRONG_CREDENTIAL)
    assert robot.revoke("ord-1")
    assert robot.verify(
        "ord-1", Method.PIN, issued.pin, T0).error is VerifyError.UNKNOWN_ORDER


def test_bad_policy_and_issue_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="secret_key needs >= 32 bytes"):
        CredentialPolicy(secret_key=b"short")
    book = _book()
    with pytest.raises(ValueError, match="order id"):
        book.issue("", now=T0)
    with pytest.raises(ValueError, match="would expire"):
        book.issue("ord-1", now=T0, expires_at=T0 - 1)


def test_error_codes_are_stable() -> None:
    assert {e.value for e in VerifyError} == {
        "wrong_credential", "expired", "already_used", "locked_out", "unknown_order",
        "wrong_order", "malformed"}


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(method=st.integers(-1, 2), text=st.text(max_size=80))
def test_any_presented_text_gets_an_answer_never_an_exception(method: int, text: str) -> None:
    book = _book()
    issued = _issue(book)
    result = book.verify("ord-1", method, text, T0 + 1)
    if result.granted:  # the random PIN was hit (p = 1e-6); nothing else may grant
        assert method == Method.PIN
        assert text.strip() == issued.pin
        return
    assert result.error in {VerifyError.MALFORMED, VerifyError.WRONG_CREDENTIAL}
    assert result.attempts_left == (5 if result.error is VerifyError.MALFORMED else 4)


@pytest.mark.ros
def test_methods_match_verify_handoff_constants() -> None:
    from delivery_interfaces.srv import VerifyHandoff

    wire = {name.removeprefix("METHOD_"): value
            for name, value in vars(VerifyHandoff.Request).items() if name.startswith("METHOD_")}
    assert wire == {method.name: method.value for method in Method}
