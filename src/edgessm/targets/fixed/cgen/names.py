"""C names: identifiers derived from model names, and the check of a user's ``--name``."""
from __future__ import annotations

import re

from ....errors import ConfigError

C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while _Bool _Complex _Imaginary""".split())


def c_identifier(text) -> str:
    """A C identifier derived from any text: lower case, [a-z0-9_], not starting with a digit."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(text)).strip("_").lower()
    if not s:
        s = "model"
    if s[0].isdigit():
        s = "m_" + s
    if s in C_KEYWORDS:
        s += "_model"
    return s


def check_name(name) -> str:
    """Reject a name that is not a usable C identifier prefix."""
    s = str(name)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", s) or s in C_KEYWORDS:
        raise ConfigError(f"--name {s!r} is not a usable C identifier (a letter, then letters, digits "
                          f"or '_', at most 48 characters, not a C keyword); e.g. {c_identifier(s)!r}")
    return s

