"""Pseudonymization at the edge: raw emails and phone numbers never reach Kafka.

Emails are trimmed and lowercased, phones normalized to E.164 (a leading 00 becomes +; a
national number gets the configured default country code), then hashed with HMAC-SHA256 under
the deployment's key. Same input + same key → same hash, so identities still join across
channels; without the key the hash cannot be reversed by guessing common addresses.
"""
from __future__ import annotations

import hashlib
import hmac
import re

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NON_DIGITS = re.compile(r"[^\d+]")


class PseudonymizationError(ValueError):
    """The value cannot be normalized (not an email / not a phone number)."""


def normalize_email(raw: str) -> str:
    email = raw.strip().lower()
    if not _EMAIL.match(email):
        raise PseudonymizationError("not an email address (expected name@domain.tld)")
    return email


def normalize_phone(raw: str, default_country_code: str = "49") -> str:
    """E.164: '+' and 8–15 digits. '0049 30 1234567' and '030 1234567' (default DE) → '+49301234567'."""
    s = _NON_DIGITS.sub("", raw.strip())
    if s.startswith("00"):
        s = "+" + s[2:]
    elif s.startswith("0"):
        s = f"+{default_country_code}{s[1:]}"
    elif not s.startswith("+"):
        s = "+" + s
    digits = s[1:]
    if not digits.isdigit() or not 8 <= len(digits) <= 15:
        raise PseudonymizationError("not a phone number (expected 8–15 digits, E.164)")
    return s


class Pseudonymizer:
    def __init__(self, key: bytes, default_country_code: str = "49"):
        if not key:
            raise ValueError("the pseudonymization key is empty; set CEM_PSEUDONYMIZATION_KEY")
        self._key = key
        self._cc = default_country_code

    def _hash(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def email_hash(self, raw: str) -> str:
        return self._hash("email", normalize_email(raw))

    def phone_hash(self, raw: str) -> str:
        return self._hash("phone", normalize_phone(raw, self._cc))


_EMAIL_IN_TEXT = re.compile(rb"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PHONE_IN_TEXT = re.compile(rb"(?<![\w.])(?:\+|00|0)\d[\d \-/().]{6,}\d")
_PII_KEYS = ("email", "phone", "caller", "mobile", "tel")


def redact_pii(raw: bytes) -> bytes:
    """Raw input kept for the DLQ, minus emails and phone numbers: values of keys that name
    them are replaced, then anything shaped like an email or a phone number anywhere else."""
    import json
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        obj = None

    def scrub(o):
        if isinstance(o, dict):
            return {k: ("<redacted>" if any(t in str(k).lower() for t in _PII_KEYS) and not str(k).endswith("_hash")
                        else scrub(v)) for k, v in o.items()}
        if isinstance(o, list):
            return [scrub(v) for v in o]
        return o

    if obj is not None:
        raw = json.dumps(scrub(obj), separators=(",", ":")).encode()
    raw = _EMAIL_IN_TEXT.sub(b"<email>", raw)
    return _PHONE_IN_TEXT.sub(b"<phone>", raw)


def pseudonymize_subject(subject: str, pseudonymizer: Pseudonymizer) -> str:
    """An erasure subject as the graph knows it: `email:…` / `phone:…` (what a customer asking to
    be forgotten gives) become `email_hash:…` / `phone_hash:…` under the same key as at the edge;
    anything else is returned as it is. Raises PseudonymizationError for an unusable email/phone."""
    kind, _, value = subject.strip().partition(":")
    if kind == "email":
        return "email_hash:" + pseudonymizer.email_hash(value)
    if kind == "phone":
        return "phone_hash:" + pseudonymizer.phone_hash(value)
    return subject
