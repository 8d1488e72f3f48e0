"""ACL policies: a small HCL reader and Vault's path matching rules."""
import json
import re

CAPS = ("create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe", "recover")
LEGACY = {"deny": ["deny"], "read": ["read", "list"],
          "write": ["create", "read", "update", "patch", "delete", "list"],
          "sudo": ["create", "read", "update", "patch", "delete", "list", "sudo"]}

DEFAULT_POLICY = '''# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own entity by id or name
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}
path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}


# Allow a token to look up its resultant ACL from all policies. This is useful
# for UIs. It is an internal path because the format may change at any time
# based on how the internal ACL features and capabilities change.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Allow checking the status of a Control Group request if the user has the
# accessor
path "sys/control-group/request" {
    capabilities = ["update"]
}

# Allow a token to make requests to the Authorization Endpoint for OIDC providers.
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
'''

RESPONSE_WRAPPING_POLICY = '''path "cubbyhole/response" {
    capabilities = ["create", "read"]
}

path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}
'''


class PolicyError(ValueError):
    pass


_TOK = re.compile(r'''
   (?P<ws>\s+)
 | (?P<c1>\#[^\n]*|//[^\n]*)
 | (?P<c2>/\*.*?\*/)
 | (?P<heredoc><<-?(?P<hdtag>[A-Za-z_]+)\n(?P<hdbody>.*?)\n\s*(?P=hdtag))
 | (?P<str>"(?:[^"\\]|\\.)*")
 | (?P<punct>[{}\[\]=,:])
 | (?P<word>[A-Za-z0-9_.\-+*/]+)
''', re.S | re.X)


def _tokens(text):
    pos = 0
    out = []
    while pos < len(text):
        m = _TOK.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise PolicyError(f"At {line}:{pos}: illegal char")
        pos = m.end()
        k = m.lastgroup
        if k in ("ws", "c1", "c2"):
            continue
        if m.group("heredoc") is not None:
            out.append(("str", m.group("hdbody")))
        elif m.group("str") is not None:
            out.append(("str", json.loads(m.group("str"))))
        elif m.group("punct") is not None:
            out.append(("p", m.group("punct")))
        else:
            out.append(("word", m.group("word")))
    return out


class _Parser:
    def __init__(self, toks):
        self.t = toks
        self.i = 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def next(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, p):
        k, v = self.next()
        if k != "p" or v != p:
            raise PolicyError(f"expected '{p}', got {v!r}")

    def body(self, closing):
        items = []   # list of (key, labels, value, is_block)
        while True:
            k, v = self.peek()
            if k is None:
                if closing:
                    raise PolicyError("unexpected end of policy")
                return items
            if k == "p" and v == "}" and closing:
                self.next()
                return items
            if k == "p" and v == ",":
                self.next()
                continue
            if k not in ("word", "str"):
                raise PolicyError(f"unexpected token {v!r}")
            self.next()
            key = v
            k2, v2 = self.peek()
            if k2 == "p" and v2 in ("=", ":"):
                self.next()
                items.append((key, [], self.value(), False))
                continue
            labels = []
            while True:
                k2, v2 = self.next()
                if k2 == "str":
                    labels.append(v2)
                elif k2 == "p" and v2 == "{":
                    break
                else:
                    raise PolicyError(f"unexpected token {v2!r} after {key!r}")
            items.append((key, labels, self.body(True), True))

    def value(self):
        k, v = self.next()
        if k == "str":
            return v
        if k == "word":
            if v in ("true", "false"):
                return v == "true"
            try:
                return int(v)
            except ValueError:
                return v
        if k == "p" and v == "[":
            out = []
            while True:
                k2, v2 = self.peek()
                if k2 == "p" and v2 == "]":
                    self.next()
                    return out
                if k2 == "p" and v2 == ",":
                    self.next()
                    continue
                out.append(self.value())
        if k == "p" and v == "{":
            return self.body(True)
        raise PolicyError(f"unexpected token {v!r}")


def parse_policy(text):
    """Returns a list of (path_pattern, set_of_capabilities)."""
    rules = []
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError as e:
            raise PolicyError(str(e))
        paths = doc.get("path", {})
        if isinstance(paths, list):
            merged = {}
            for p in paths:
                merged.update(p)
            paths = merged
        for pat, body in paths.items():
            rules.append(_rule(pat, body.get("capabilities"), body.get("policy")))
        return rules
    items = _Parser(_tokens(text)).body(False)
    for key, labels, val, is_block in items:
        if key == "name":
            continue
        if key != "path":
            raise PolicyError(f"invalid key \"{key}\" on line 1")
        if not is_block or len(labels) != 1:
            raise PolicyError("path must be a block with one label")
        caps = pol = None
        for k2, _l, v2, _b in val:
            if k2 == "capabilities":
                caps = v2
            elif k2 == "policy":
                pol = v2
        rules.append(_rule(labels[0], caps, pol))
    return rules


def _rule(pattern, caps, pol):
    out = set()
    if caps is not None:
        if not isinstance(caps, list):
            raise PolicyError(f"path \"{pattern}\": capabilities must be a list")
        for c in caps:
            c = str(c).lower()
            if c == "root":
                raise PolicyError(f"path \"{pattern}\": invalid capability \"{c}\"")
            if c not in CAPS:
                raise PolicyError(f"path \"{pattern}\": invalid capability \"{c}\"")
            out.add(c)
    if pol is not None:
        pol = str(pol).lower()
        if pol not in LEGACY:
            raise PolicyError(f"path \"{pattern}\": invalid policy \"{pol}\"")
        out.update(LEGACY[pol])
    if pattern.startswith("/"):
        pattern = pattern[1:]
    return (pattern, out)


class Rule:
    def __init__(self, pattern, caps):
        self.pattern = pattern
        self.caps = set(caps)
        self.glob = pattern.endswith("*")
        base = pattern[:-1] if self.glob else pattern
        segs = base.split("/")
        self.plus = sum(1 for s in segs if s == "+")
        rx = "/".join("[^/]*" if s == "+" else re.escape(s) for s in segs)
        self.rx = re.compile(rx + (".*" if self.glob else ""), re.S)
        idx = [i for i in (pattern.find("+"), pattern.find("*")) if i >= 0]
        self.first_wild = min(idx) if idx else 1 << 30
        self.exact = not self.glob and self.plus == 0

    def matches(self, path):
        return self.rx.fullmatch(path) is not None

    def key(self):
        # Higher tuple = higher priority (Vault's "most specific match" rules).
        return (1 if self.exact else 0, self.first_wild, 0 if self.glob else 1, -self.plus,
                len(self.pattern), self.pattern)


class ACL:
    def __init__(self, policy_texts):
        merged = {}
        for text in policy_texts:
            for pat, caps in parse_policy(text):
                merged.setdefault(pat, set()).update(caps)
        self.rules = []
        for pat, caps in merged.items():
            if "deny" in caps:
                caps = {"deny"}
            self.rules.append(Rule(pat, caps))

    def capabilities(self, path):
        best = None
        for r in self.rules:
            if r.matches(path) and (best is None or r.key() > best.key()):
                best = r
        if best is None:
            return set()
        return set(best.caps)

    def allowed(self, path, cap):
        caps = self.capabilities(path)
        return "deny" not in caps and cap in caps

    def any_under(self, prefix):
        """Whether any rule could grant something at or below prefix (for ui/mounts)."""
        for r in self.rules:
            if "deny" in r.caps or not r.caps:
                continue
            base = r.pattern[:-1] if r.glob else r.pattern
            cut = base.split("+")[0]
            if cut.startswith(prefix) or prefix.startswith(cut) and r.glob or \
                    (prefix.startswith(cut) and "+" in base):
                return True
        return False
