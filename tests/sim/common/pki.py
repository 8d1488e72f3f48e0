"""Test PKI: a throwaway CA and server/client certificates, made at test time.

Nothing here is ever committed: every test run makes its own keys.
    python3 -m tests.sim.common.pki OUTDIR   (or import make_pki)
writes OUTDIR/ca.pem, ca.key, server.pem, server.key (CN=localhost,
SAN DNS:localhost, IP:127.0.0.1, EKU serverAuth), client.pem, client.key
(EKU clientAuth), dnsonly.pem/.key (DNS names only: localhost,
sqlnode1..3.sim.test), and other-ca.pem (a CA that vouches for nothing here).
"""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path, key):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, cn, sans, eku, rsa_key=False):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key \
        else ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([eku]), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def make_pki(outdir, rsa_client=True):
    """Create the files; returns a dict of their paths."""
    os.makedirs(outdir, exist_ok=True)
    ca_key, ca_cert = _ca("dmkagent test CA")
    _write_key(os.path.join(outdir, "ca.key"), ca_key)
    _write_cert(os.path.join(outdir, "ca.pem"), ca_cert)
    sk, sc = _leaf(ca_key, ca_cert, "localhost",
                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                   ExtendedKeyUsageOID.SERVER_AUTH)
    _write_key(os.path.join(outdir, "server.key"), sk)
    _write_cert(os.path.join(outdir, "server.pem"), sc)
    # A server certificate for a different name (host-name check tests).
    wk, wc = _leaf(ca_key, ca_cert, "wrong.example", [x509.DNSName("wrong.example")],
                   ExtendedKeyUsageOID.SERVER_AUTH)
    _write_key(os.path.join(outdir, "wrongname.key"), wk)
    _write_cert(os.path.join(outdir, "wrongname.pem"), wc)
    # DNS names only, as certificates issued to replicas' FQDNs are (no IP address).
    dk, dc = _leaf(ca_key, ca_cert, "sqlnode1.sim.test",
                   [x509.DNSName(n) for n in ("localhost", "sqlnode1.sim.test", "sqlnode2.sim.test",
                                              "sqlnode3.sim.test")],
                   ExtendedKeyUsageOID.SERVER_AUTH)
    _write_key(os.path.join(outdir, "dnsonly.key"), dk)
    _write_cert(os.path.join(outdir, "dnsonly.pem"), dc)
    ck, cc = _leaf(ca_key, ca_cert, "dmkagent-client", None, ExtendedKeyUsageOID.CLIENT_AUTH,
                   rsa_key=rsa_client)
    _write_key(os.path.join(outdir, "client.key"), ck)
    _write_cert(os.path.join(outdir, "client.pem"), cc)
    ok, oc = _ca("some other CA")
    _write_cert(os.path.join(outdir, "other-ca.pem"), oc)
    ok2, oc2 = _leaf(ok, oc, "localhost",
                     [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                     ExtendedKeyUsageOID.SERVER_AUTH)
    _write_key(os.path.join(outdir, "untrusted.key"), ok2)
    _write_cert(os.path.join(outdir, "untrusted.pem"), oc2)
    names = ["ca.pem", "ca.key", "server.pem", "server.key", "wrongname.pem", "wrongname.key",
             "dnsonly.pem", "dnsonly.key",
             "client.pem", "client.key", "other-ca.pem", "untrusted.pem", "untrusted.key"]
    return {n.replace(".", "_"): os.path.join(outdir, n) for n in names}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pki.py OUTDIR")
    for k, v in make_pki(sys.argv[1]).items():
        print(f"{k}={v}")
