"""Which remembered facts a new one replaces: a statement of a single-valued fact about the user.

"my locker code is 5678" replaces "my locker code is 4471"; "my brother moved to Austin" replaces
"my brother lives in Denver"; "I live in Porto" replaces "I live in Lisbon". Both have the same
key, (whom or what it is about, which attribute). Facts that add rather than replace have no key:
lists ("my shopping list includes eggs"), likings ("I like jazz"), and plain descriptions ("my car
is blue" and "my car is in the garage" are both true). Pure: text in, key out.
"""

from __future__ import annotations

import re

#: Attributes that have one value at a time: "my <...> <noun> is ...".
_SINGLE_VALUED = (
    "name|names|nickname|code|password|passcode|pin|number|address|email|e-mail|birthday|age|job|"
    "occupation|username|postcode|zip code|zip|phone|blood type|shoe size|size|height|weight|anniversary"
)
_WHO = r"(?P<who>i|my (?:\w+(?:'s)? ){0,2}?\w+?)"
_KEYS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "my wifi password is ...", "my sister's birthday is ...", "my favourite colour is ..."
    (
        re.compile(rf"^(?P<who>my (?:[\w'-]+ ){{0,3}}?(?:{_SINGLE_VALUED}|fav(?:ou)?rite [\w-]+))(?: is| are)\b", re.I),
        "is",
    ),
    # "my dog is called Biscuit"
    (re.compile(rf"^{_WHO} (?:is|are) (?:called|named)\b", re.I), "called"),
    # "I live in Lisbon", "my brother moved to Austin", "my parents live in Leeds"
    (
        re.compile(
            rf"^{_WHO} (?:live|lives|lived|moved|have moved|has moved|am living|is living) (?:in|to|at)\b", re.I
        ),
        "home",
    ),
    # "I work at the bakery", "my wife works as a nurse"
    (re.compile(rf"^{_WHO} (?:work|works|am working|is working) (?:at|as|for|in)\b", re.I), "work"),
)


def fact_key(text: str) -> tuple[str, str] | None:
    """(subject, attribute) of a single-valued fact, lowercased ("my brother", "home"); None when
    the statement adds to what is known rather than replacing a value."""
    said = " ".join(text.strip().split())
    for pattern, attribute in _KEYS:
        found = pattern.match(said)
        if found:
            return found["who"].lower(), attribute
    return None
