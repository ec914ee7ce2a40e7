"""One-time recipient credentials per order: a 6-digit PIN and a signed QR token.

Both are shown once, when the order is made, and afterwards only salted scrypt hashes are kept
(the order store's `credentials.SecretHash`, so both speak one hash format), and a leaked store
or robot disk does not reveal a code. The PIN is also keyed with the fleet secret before
hashing: a 6-digit space is small, and without the key it cannot be searched offline.
Five wrong tries lock the order out for a cool-down and produce an event for the shop.

`now` is always passed in (seconds on the clock the fleet shares) so that tests are
deterministic. Verification never raises on what a recipient types or shows: it answers with a
stable `VerifyError` code that the tablet and the `handoff/verify` service pass on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

from delivery_robot.credentials import (
    PIN_DIGITS,
    PIN_PARAMS,
    TOKEN_PARAMS,
    ScryptParams,
    SecretHash,
    hash_secret,
    new_pin,
)

TOKEN_PREFIX = "h1"  # token format version; a new format gets a new prefix
NONCE_BYTES = 12
MAC_BYTES = 16  # HMAC-SHA256 truncated to 128 bits keeps the QR code small
MIN_SECRET_KEY_BYTES = 32
MAX_CREDENTIAL_CHARS = 512  # longer input is refused before any hashing
MAX_ORDER_ID_CHARS = 128
_DIGITS = frozenset("0123456789")
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Method(IntEnum):
    """How the recipient proves who they are; values equal `VerifyHandoff.METHOD_*` (a test
    keeps them equal), so the node passes the request's number straight in."""

    PIN = 0
    QR = 1


class VerifyError(StrEnum):
    """Why a credential was not accepted; the values are the wire `error_code` strings."""

    WRONG_CREDENTIAL = "wrong_credential"
    EXPIRED = "expired"
    ALREADY_USED = "already_used"
    LOCKED_OUT = "locked_out"
    UNKNOWN_ORDER = "unknown_order"
    WRONG_ORDER = "wrong_order"  # a genuine QR token, but for another order
    MALFORMED = "malformed"  # not a 6-digit PIN / not a token of ours; costs no attempt


@dataclass(frozen=True)
class CredentialPolicy:
    secret_key: bytes = field(repr=False)  # signs QR tokens and keys PIN hashes (config)
    ttl_s: float = 4 * 3600.0  # default validity from issue time
    max_attempts: int = 5  # wrong tries before a lockout
    lockout_s: float = 300.0  # cool-down after max_attempts wrong tries
    # scrypt costs, stored in each hash (a change only affects new hashes). The PIN's is slow
    # (~0.1 s); the token carries 224 random and MAC bits, so a cheap salted hash is enough.
    pin_hash_cost: ScryptParams = PIN_PARAMS
    token_hash_cost: ScryptParams = TOKEN_PARAMS

    def __post_init__(self) -> None:
        problems = []
        if len(self.secret_key) < MIN_SECRET_KEY_BYTES:
            problems.append(f"secret_key needs >= {MIN_SECRET_KEY_BYTES} bytes")
        if not self.ttl_s > 0:
            problems.append("ttl_s must be > 0")
        if self.max_attempts < 1:
            problems.append("max_attempts must be >= 1")
        if not self.lockout_s >= 0:
            problems.append("lockout_s must be >= 0")
        if problems:
            raise ValueError("bad credential policy: " + "; ".join(problems))


@dataclass(frozen=True)
class IssuedCredentials:
    """The only place the plain PIN and token exist: hand them to the shop, then drop them."""

    order_id: str
    pin: str = field(repr=False)
    qr_token: str = field(repr=False)
    expires_at: int  # seconds, same clock as `now`


@dataclass(frozen=True)
class StoredCredentials:
    """What is kept (and persisted, and sent to the robot) for one order: hashes and counters."""

    order_id: str
    pin_hash: SecretHash
    qr_hash: SecretHash
    expires_at: int
    used_at: float | None = None
    failed_attempts: int = 0
    locked_until: float | None = None
    lockouts: int = 0  # how many cool-downs this order has had (brute-force signal)


@dataclass(frozen=True)
class LockoutEvent:
    """Raised once per lockout; the shop (and the operator page) is told."""

    order_id: str
    at: float
    until: float
    failed_attempts: int
    lockouts: int
    method: Method


@dataclass(frozen=True)
class VerifyResult:
    granted: bool
    error: VerifyError | None
    message: str
    attempts_left: int
    lockout_remaining_s: float = 0.0
    lockout: LockoutEvent | None = None  # set on the attempt that started a lockout

    @property
    def error_code(self) -> str:
        """The `VerifyHandoff.Response.error_code` text: empty when granted."""
        return self.error.value if self.error is not None else ""


@dataclass(frozen=True)
class AttemptStatus:
    attempts_left: int
    lockout_remaining_s: float


# --- encoding ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Strict URL-safe base64 without padding; None unless `text` is the canonical encoding."""
    if not text or not set(text) <= _B64URL:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64(data) == text else None


# --- PIN and QR token --------------------------------------------------------------------------


def _pin_secret(key: bytes, order_id: str, pin: str) -> str:
    """The PIN keyed with the fleet secret and bound to its order, as fed to scrypt."""
    message = b"pin\x00" + order_id.encode() + b"\x00" + pin.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _token_mac(key: bytes, order_id: str, expires_at: int, nonce: bytes) -> bytes:
    message = b"qr1\x00" + order_id.encode() + b"\x00" + str(expires_at).encode() + b"\x00" + nonce
    return hmac.new(key, message, hashlib.sha256).digest()[:MAC_BYTES]


@dataclass(frozen=True)
class _TokenClaims:
    order_id: str
    expires_at: int
    nonce: bytes
    mac: bytes


def make_qr_token(key: bytes, order_id: str, expires_at: int, nonce: bytes) -> str:
    """`h1.<order id>.<expiry s>.<nonce>.<mac>`, URL-safe, ~70 characters for short ids."""
    mac = _token_mac(key, order_id, expires_at, nonce)
    return ".".join((TOKEN_PREFIX, _b64(order_id.encode()), str(expires_at), _b64(nonce),
                     _b64(mac)))


def _parse_token(text: str) -> _TokenClaims | None:
    parts = text.split(".")
    if len(parts) != 5 or parts[0] != TOKEN_PREFIX:
        return None
    raw_order, expiry, raw_nonce, raw_mac = parts[1:]
    order_bytes, nonce, mac = _unb64(raw_order), _unb64(raw_nonce), _unb64(raw_mac)
    if order_bytes is None or nonce is None or mac is None:
        return None
    if len(nonce) != NONCE_BYTES or len(mac) != MAC_BYTES:
        return None
    if not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12):
        return None
    try:
        order_id = order_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _TokenClaims(order_id, int(expiry), nonce, mac)


# --- the credential book -----------------------------------------------------------------------


class HandoffCredentials:
    """Issues and checks the credentials of the orders one coordinator or robot knows about.

    Not thread-safe: the owning node calls it from one executor thread.
    """

    def __init__(self, policy: CredentialPolicy,
                 records: list[StoredCredentials] | None = None) -> None:
        self._policy = policy
        self._records: dict[str, StoredCredentials] = {}
        for record in records or []:
            self.add(record)

    @property
    def policy(self) -> CredentialPolicy:
        return self._policy

    def issue(self, order_id: str, now: float,
              expires_at: float | None = None) -> IssuedCredentials:
        """New PIN and QR token for `order_id`; re-issuing replaces the old pair (the old ones
        stop working) but keeps the attempt count and any lockout, so it cannot lift one."""
        if not order_id or len(order_id) > MAX_ORDER_ID_CHARS:
            raise ValueError(f"order id must be 1..{MAX_ORDER_ID_CHARS} characters")
        expiry = math.floor(now + self._policy.ttl_s if expires_at is None else expires_at)
        if expiry <= now:
            raise ValueError(f"credentials for {order_id} would expire at {expiry} <= now {now}")
        pin = new_pin()
        token = make_qr_token(self._policy.secret_key, order_id, expiry,
                              secrets.token_bytes(NONCE_BYTES))
        policy = self._policy
        record = StoredCredentials(
            order_id=order_id,
            pin_hash=hash_secret(_pin_secret(policy.secret_key, order_id, pin),
                                 policy.pin_hash_cost),
            qr_hash=hash_secret(token, policy.token_hash_cost),
            expires_at=expiry)
        previous = self._records.get(order_id)
        if previous is not None:
            record = replace(record, failed_attempts=previous.failed_attempts,
                             locked_until=previous.locked_until, lockouts=previous.lockouts)
        self._records[order_id] = record
        return IssuedCredentials(order_id, pin, token, expiry)

    def add(self, record: StoredCredentials) -> None:
        """Take over a stored record (from the order store, or sent to the robot)."""
        self._records[record.order_id] = record

    def record(self, order_id: str) -> StoredCredentials | None:
        return self._records.get(order_id)

    def records(self) -> list[StoredCredentials]:
        """Everything to persist (hashes and counters only, never a plain code)."""
        return list(self._records.values())

    def revoke(self, order_id: str) -> bool:
        """Forget an order's credentials (order cancelled or finished)."""
        return self._records.pop(order_id, None) is not None

    def rearm(self, order_id: str) -> bool:
        """Make a used credential valid again, for when the compartment relocked without a
        handover (recipient did not open, or closed it with the goods inside)."""
        record = self._records.get(order_id)
        if record is None or record.used_at is None:
            return False
        self._records[order_id] = replace(record, used_at=None)
        return True

    def status(self, order_id: str, now: float) -> AttemptStatus | None:
        record = self._records.get(order_id)
        if record is None:
            return None
        record = self._end_lockout_if_over(record, now)
        return AttemptStatus(self._attempts_left(record), self._lockout_remaining(record, now))

    def verify(self, order_id: str, method: int, credential: str, now: float) -> VerifyResult:
        """Check a presented PIN or QR token; a grant uses the order's credentials up."""
        record = self._records.get(order_id)
        if record is None:
            return VerifyResult(False, VerifyError.UNKNOWN_ORDER,
                                "no delivery with this number is waiting here", 0)
        record = self._end_lockout_if_over(record, now)
        remaining = self._lockout_remaining(record, now)
        if remaining > 0:
            return VerifyResult(False, VerifyError.LOCKED_OUT,
                                f"too many wrong tries; try again in {math.ceil(remaining)} s",
                                0, remaining)
        left = self._attempts_left(record)
        if record.used_at is not None:
            return VerifyResult(False, VerifyError.ALREADY_USED,
                                "this code was already used", left)
        if now >= record.expires_at:
            return VerifyResult(False, VerifyError.EXPIRED, "this code has expired", left)
        try:
            how = Method(method)
        except ValueError:
            return VerifyResult(False, VerifyError.MALFORMED, f"unknown method {method!r}", left)
        text = credential.strip()
        if len(text) > MAX_CREDENTIAL_CHARS:
            return VerifyResult(False, VerifyError.MALFORMED, "credential too long", left)
        if how is Method.PIN:
            if len(text) != PIN_DIGITS or not set(text) <= _DIGITS:
                return VerifyResult(False, VerifyError.MALFORMED,
                                    f"a PIN is {PIN_DIGITS} digits", left)
            matches = record.pin_hash.verify(
                _pin_secret(self._policy.secret_key, order_id, text))
        else:
            claims = _parse_token(text)
            if claims is None:
                return VerifyResult(False, VerifyError.MALFORMED, "not a delivery QR code", left)
            genuine = hmac.compare_digest(
                _token_mac(self._policy.secret_key, claims.order_id, claims.expires_at,
                           claims.nonce), claims.mac)
            if genuine and claims.order_id != order_id:
                return VerifyResult(False, VerifyError.WRONG_ORDER,
                                    "this QR code belongs to another delivery", left)
            if genuine and now >= claims.expires_at:
                return VerifyResult(False, VerifyError.EXPIRED, "this code has expired", left)
            # A forged token (bad MAC) or a superseded one counts as a wrong try.
            matches = genuine and record.qr_hash.verify(text)
        if matches:
            self._records[order_id] = replace(record, used_at=now, failed_attempts=0)
            return VerifyResult(True, None, "accepted", self._policy.max_attempts)
        return self._wrong_try(record, how, now)

    def _wrong_try(self, record: StoredCredentials, how: Method, now: float) -> VerifyResult:
        failed = record.failed_attempts + 1
        if failed < self._policy.max_attempts:
            self._records[record.order_id] = replace(record, failed_attempts=failed)
            left = self._policy.max_attempts - failed
            return VerifyResult(False, VerifyError.WRONG_CREDENTIAL,
                                f"wrong code; {left} tries left", left)
        until = now + self._policy.lockout_s
        record = replace(record, failed_attempts=failed, locked_until=until,
                         lockouts=record.lockouts + 1)
        self._records[record.order_id] = record
        event = LockoutEvent(record.order_id, now, until, failed, record.lockouts, how)
        return VerifyResult(False, VerifyError.LOCKED_OUT,
                            f"wrong code; too many wrong tries, locked for "
                            f"{math.ceil(self._policy.lockout_s)} s",
                            0, self._policy.lockout_s, event)

    def _end_lockout_if_over(self, record: StoredCredentials, now: float) -> StoredCredentials:
        """After the cool-down the order gets a fresh set of attempts."""
        if record.locked_until is None or now < record.locked_until:
            return record
        record = replace(record, locked_until=None, failed_attempts=0)
        self._records[record.order_id] = record
        return record

    def _attempts_left(self, record: StoredCredentials) -> int:
        if record.locked_until is not None:
            return 0
        return max(0, self._policy.max_attempts - record.failed_attempts)

    @staticmethod
    def _lockout_remaining(record: StoredCredentials, now: float) -> float:
        if record.locked_until is None:
            return 0.0
        return max(0.0, record.locked_until - now)
