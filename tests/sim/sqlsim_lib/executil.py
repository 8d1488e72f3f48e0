"""Small pieces shared by the executor's statement modules."""
import re

from . import tds
from .errors import SqlError


def type_of(s):
    m = re.match(r"^(\w+)(?:\((max|\d+)\))?$", s)
    name, size = m.group(1), m.group(2)
    if size == "max":
        size = -1
    elif size is not None:
        size = int(size)
    return tds.parse_type(name, size)


class ReturnSignal(Exception):
    def __init__(self, value):
        self.value = value


def check_policy(pw):
    if pw is None:
        return
    if len(pw) < 8:
        raise SqlError(15116)
    if len(pw) > 128:
        raise SqlError(15117)
    classes = sum([any(c.isupper() for c in pw), any(c.islower() for c in pw), any(c.isdigit() for c in pw),
                   any(not c.isalnum() for c in pw)])
    if classes < 3:
        raise SqlError(15118)
