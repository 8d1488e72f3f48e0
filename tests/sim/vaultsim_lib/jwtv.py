"""JWT signature verification (RS*/PS*/ES*/EdDSA) against PEM public keys or certificates."""
import json

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .util import b64url_decode

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


class JWTError(ValueError):
    pass


def load_keys(pems):
    keys = []
    for pem in pems or []:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            if b"CERTIFICATE" in data:
                keys.append(x509.load_pem_x509_certificate(data).public_key())
            else:
                keys.append(serialization.load_pem_public_key(data))
        except ValueError as e:
            raise JWTError(f"error parsing public key: {e}")
    return keys


def parse(token):
    if not isinstance(token, str) or token.count(".") != 2:
        raise JWTError("square/go-jose: compact JWS format must have three parts")
    h, p, s = token.split(".")
    try:
        header = json.loads(b64url_decode(h))
        claims = json.loads(b64url_decode(p))
        sig = b64url_decode(s)
    except Exception:
        raise JWTError("failed to decode JWT")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWTError("failed to decode JWT")
    return header, claims, sig, (h + "." + p).encode()


def _verify_one(key, alg, sig, signed):
    if alg.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
        key.verify(sig, signed, padding.PKCS1v15(), HASHES[alg[2:]]())
    elif alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
        h = HASHES[alg[2:]]()
        key.verify(sig, signed, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    elif alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
        n = len(sig) // 2
        der = encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
        key.verify(der, signed, ec.ECDSA(HASHES[alg[2:]]()))
    elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(sig, signed)
    else:
        raise InvalidSignature()


def verify(token, pems, allowed_algs=None):
    """Returns the claims when the signature verifies with one of the keys."""
    header, claims, sig, signed = parse(token)
    alg = header.get("alg", "")
    if alg not in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"):
        raise JWTError(f"unsupported signing algorithm \"{alg}\"" if alg != "none" else "unsupported signing algorithm \"none\"")
    if allowed_algs and alg not in allowed_algs:
        raise JWTError(f"token signed with unsupported algorithm \"{alg}\"")
    keys = load_keys(pems)
    for k in keys:
        try:
            _verify_one(k, alg, sig, signed)
            return claims
        except (InvalidSignature, ValueError, KeyError):
            continue
    raise JWTError("no known key successfully validated the token signature")
