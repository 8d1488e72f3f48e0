#!/usr/bin/python3
"""azuresim against Debian's Azure SDK for Python (python3-azure: azure-identity, azure-keyvault-secrets;
python3-msal), a second independent client beside the JavaScript SDK: client secret and client
certificate credentials (MSAL signs the certificate assertion RS256 with a SHA-1 x5t), the 401 challenge,
versions listed one per page, tags, 404s, delete, the deleted view and recover.  Exits 77 without the
packages."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CLIENT_ID, Env, SECRET, SKIP, TENANT  # noqa: E402

try:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.identity import CertificateCredential, ClientSecretCredential
    from azure.keyvault.secrets import SecretClient
except ImportError as e:  # pragma: no cover
    print(f"skipped: Debian's Azure SDK for Python is not installed ({e}; apt-get install python3-azure "
          "python3-msal)")
    sys.exit(SKIP)


class PySDK(unittest.TestCase):
    def setUp(self):
        for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            os.environ.pop(k, None)
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        self.env = Env().__enter__()
        self.addCleanup(self.env.__exit__, None, None, None)
        self.ca = self.env.pki["ca_pem"]
        self.kw = {"authority": self.env.ready["authority_host"], "instance_discovery": False,
                   "connection_verify": self.ca}

    def client(self, cred):
        return SecretClient(self.env.ready["vault_url"], cred, verify_challenge_resource=False,
                            connection_verify=self.ca)

    def round_trip(self, cred, name):
        c = self.client(cred)
        for i in range(5):
            c.set_secret(name, f"value-{i}", tags={"n": str(i)})
        self.assertEqual(c.get_secret(name).value, "value-4")
        pages = list(c.list_properties_of_secret_versions(name, max_page_size=1).by_page())
        self.assertEqual(len(pages), 5)
        vers = [p.version for page in pages for p in page]
        self.assertEqual(len(set(vers)), 5)
        # tags: update one version's tags; the value stays
        v0 = next(p for page in c.list_properties_of_secret_versions(name) for p in [page]
                  if p.tags.get("n") == "0")
        c.update_secret_properties(name, v0.version, tags={"n": "0", "state": "retired"})
        self.assertEqual(c.get_secret(name, v0.version).properties.tags,
                         {"n": "0", "state": "retired"})
        self.assertEqual(c.get_secret(name, v0.version).value, "value-0")
        with self.assertRaises(ResourceNotFoundError):
            c.get_secret(name + "-absent")
        with self.assertRaises(ResourceNotFoundError):
            c.get_secret(name, "0" * 32)
        c.begin_delete_secret(name).wait()
        self.assertEqual(c.get_deleted_secret(name).name, name)
        with self.assertRaises(ResourceNotFoundError):
            c.get_secret(name)
        c.begin_recover_deleted_secret(name).wait()
        self.assertEqual(c.get_secret(name).value, "value-4")

    def test_client_secret(self):
        cred = ClientSecretCredential(TENANT, CLIENT_ID, SECRET, **self.kw)
        self.round_trip(cred, "py-secret")

    def test_client_certificate_rs256_x5t(self):
        with open(self.env.pki["client_pem"], "rb") as f:
            pem = f.read()
        with open(self.env.pki["client_key"], "rb") as f:
            pem = f.read() + pem
        cred = CertificateCredential(TENANT, CLIENT_ID, certificate_data=pem, **self.kw)
        self.round_trip(cred, "py-cert")


if __name__ == "__main__":
    unittest.main()
