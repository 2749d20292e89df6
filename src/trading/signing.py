"""Request signatures for Binance's SIGNED endpoints.

- HMAC-SHA256 (the usual API key + secret): hex digest of the query string with the secret as key;
- Ed25519 (a key pair registered on Binance): base64 of the Ed25519 signature of the query string, made
  with the PKCS#8 PEM private key at BINANCE_PRIVATE_KEY_PATH (the URL-encoding is the client's job).

A signer never shows its key: ``repr`` and ``str`` say only which kind it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key


class Signer(Protocol):
    kind: str

    def sign(self, payload: str) -> str: ...


class HmacSigner:
    kind = "hmac-sha256"

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an HMAC secret is required")
        self.__secret = secret.encode()

    def sign(self, payload: str) -> str:
        return hmac.new(self.__secret, payload.encode(), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "HmacSigner(***)"


class Ed25519Signer:
    kind = "ed25519"

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.__key = key

    @classmethod
    def from_pem(cls, pem: bytes) -> Ed25519Signer:
        try:
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError("BINANCE_PRIVATE_KEY_PATH is not an unencrypted PKCS#8 PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("BINANCE_PRIVATE_KEY_PATH holds a private key that is not Ed25519")
        return cls(key)

    @classmethod
    def from_file(cls, path: Path) -> Ed25519Signer:
        try:
            return cls.from_pem(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"BINANCE_PRIVATE_KEY_PATH={path} cannot be read ({type(exc).__name__})") from exc

    def sign(self, payload: str) -> str:
        return base64.b64encode(self.__key.sign(payload.encode())).decode()

    def __repr__(self) -> str:
        return "Ed25519Signer(***)"
