"""Minimal JWT support: enough to mint RS256 access tokens and to verify
client assertions (RS256 + x5t, PS256 + x5t#S256) and federated tokens."""
import base64
import hashlib
import json
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils


class JWTError(Exception):
    pass


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_dec(s):
    if isinstance(s, str):
        s = s.encode("ascii")
    s += b"=" * (-len(s) % 4)
    return base64.urlsafe_b64decode(s)


def split(token):
    """-> (header dict, claims dict, signing input bytes, signature bytes)."""
    if not isinstance(token, str):
        raise JWTError("token is not a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("JWT does not have three parts")
    try:
        header = json.loads(b64u_dec(parts[0]))
        claims = json.loads(b64u_dec(parts[1]))
        sig = b64u_dec(parts[2])
    except (ValueError, UnicodeDecodeError) as e:
        raise JWTError(f"JWT is not decodable: {e}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWTError("JWT header/claims are not objects")
    return header, claims, (parts[0] + "." + parts[1]).encode("ascii"), sig


def verify_signature(public_key, alg, signing_input, sig):
    """True when sig is a valid alg signature over signing_input."""
    try:
        if alg == "RS256" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(sig, signing_input,
                              padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                          salt_length=padding.PSS.AUTO), hashes.SHA256())
        elif alg == "ES256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                return False
            der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                             int.from_bytes(sig[32:], "big"))
            public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            return False
        return True
    except InvalidSignature:
        return False


def sign(private_key, header, claims):
    """Sign with RS256 (RSA key) or ES256 (EC key); header alg is filled in."""
    header = dict(header)
    if isinstance(private_key, rsa.RSAPrivateKey):
        header.setdefault("alg", "RS256")
    else:
        header["alg"] = "ES256"
    header.setdefault("typ", "JWT")
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    c = b64u(json.dumps(claims, separators=(",", ":")).encode())
    si = (h + "." + c).encode("ascii")
    alg = header["alg"]
    if alg == "RS256":
        sig = private_key.sign(si, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        sig = private_key.sign(si, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                               salt_length=32), hashes.SHA256())
    else:
        r, s = utils.decode_dss_signature(private_key.sign(si, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return h + "." + c + "." + b64u(sig)


def load_certs(path):
    """All certificates in a PEM file."""
    with open(path, "rb") as f:
        data = f.read()
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
    return [x509.load_pem_x509_certificate(b) for b in blocks]


def cert_thumbprints(cert):
    der = cert.public_bytes(serialization.Encoding.DER)
    return b64u(hashlib.sha1(der).digest()), b64u(hashlib.sha256(der).digest())


def load_public_key(path):
    """A public key from a PEM private key, public key or certificate."""
    with open(path, "rb") as f:
        data = f.read()
    if b"CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key(), None
    if b"PRIVATE KEY" in data:
        priv = serialization.load_pem_private_key(data, password=None)
        return priv.public_key(), priv
    return serialization.load_pem_public_key(data), None


def rsa_jwk(public_key, kid):
    nums = public_key.public_numbers()
    n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
    e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid, "n": b64u(n), "e": b64u(e)}
