"""A throwaway MIT Kerberos realm on loopback for tests (Debian's krb5-kdc, krb5-admin-server,
krb5-user): its own krb5.conf and kdc.conf under DIR (KRB5_CONFIG, KRB5_KDC_PROFILE), a database
with a random master password, krb5kdc in the foreground on a free port, principals with random keys
exported to keytabs.  Nothing outside DIR is touched; stop() ends the KDC it started.

    kdc = KDC(dir).start()
    kdc.add("MSSQLSvc/127.0.0.1:1433", keytab)       # service
    kdc.kinit("dmkagent", client_keytab)              # the client's ticket in kdc.ccache
"""
import os
import secrets
import shutil
import socket
import subprocess
import time

TOOLS = ("/usr/sbin/krb5kdc", "/usr/sbin/kdb5_util", "/usr/sbin/kadmin.local", "/usr/bin/kinit")


def missing():
    """What is not installed, or None."""
    gone = [t for t in TOOLS if not os.path.exists(t)]
    try:
        import gssapi  # noqa: F401
    except ImportError:
        gone.append("python3-gssapi")
    return ", ".join(gone) or None


class KDC:
    def __init__(self, d, realm="DMK.TEST"):
        self.dir = d
        self.realm = realm
        self.proc = None
        os.makedirs(d, exist_ok=True)
        self.krb5_conf = os.path.join(d, "krb5.conf")
        self.kdc_conf = os.path.join(d, "kdc.conf")
        self.ccache = "FILE:" + os.path.join(d, "ccache")

    def env(self):
        e = dict(os.environ)
        e.update(KRB5_CONFIG=self.krb5_conf, KRB5_KDC_PROFILE=self.kdc_conf, KRB5CCNAME=self.ccache,
                 KRB5RCACHETYPE="none")
        return e

    def _run(self, argv):
        p = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {p.stdout}{p.stderr}")
        return p.stdout

    def start(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        d, r = self.dir, self.realm
        with open(self.krb5_conf, "w") as f:
            f.write(f"[libdefaults]\n default_realm = {r}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
                    f" rdns = false\n dns_canonicalize_hostname = false\n udp_preference_limit = 1\n"
                    f" default_ccache_name = {self.ccache}\n"
                    f"[realms]\n {r} = {{\n  kdc = 127.0.0.1:{self.port}\n }}\n"
                    f"[domain_realm]\n localhost = {r}\n 127.0.0.1 = {r}\n")
        with open(self.kdc_conf, "w") as f:
            f.write(f"[kdcdefaults]\n kdc_ports = {self.port}\n kdc_tcp_ports = {self.port}\n"
                    f"[realms]\n {r} = {{\n  database_name = {d}/principal\n  key_stash_file = {d}/stash\n"
                    f"  acl_file = {d}/kadm5.acl\n  max_life = 1h\n }}\n"
                    f"[logging]\n kdc = FILE:{d}/kdc.log\n")
        open(os.path.join(d, "kadm5.acl"), "w").close()
        self._run(["/usr/sbin/kdb5_util", "create", "-s", "-r", r, "-P", secrets.token_urlsafe(24)])
        self.err = open(os.path.join(d, "krb5kdc.err"), "w")
        self.proc = subprocess.Popen(["/usr/sbin/krb5kdc", "-n", "-r", r], env=self.env(),
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        with open(os.path.join(d, "krb5kdc.err")) as f:
            raise RuntimeError("krb5kdc did not start: " + f.read())

    def add(self, principal, keytab):
        self._run(["/usr/sbin/kadmin.local", "-r", self.realm, "-q", f"addprinc -randkey {principal}"])
        self._run(["/usr/sbin/kadmin.local", "-r", self.realm, "-q", f"ktadd -k {keytab} {principal}"])

    def kinit(self, principal, keytab):
        self._run(["/usr/bin/kinit", "-k", "-t", keytab, principal])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "err", None) is not None:
            self.err.close()
            self.err = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
