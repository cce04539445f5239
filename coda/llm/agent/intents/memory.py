"""Memory: remember, recall and forget what the user tells; lists kept as memories."""

from __future__ import annotations

import re

from coda.llm.agent.intents.base import Intent, clean_slot, template
from coda.llm.agent.refusals import unsupported
from coda.tools.lists import list_sentence

_PREFERENCE = re.compile(r"\b(?:i (?:like|love|prefer|hate|dislike|enjoy)|my fav(?:ou)?rite|i would rather)\b")


# Forgetting: "forget my gym locker code", "forget that my sister lives in Boston". Only what is the
# user's ("my ...", "what I told you about ..."): a bare "forget it" is not a request to delete.
@template(
    r"(?:forget|delete|erase|remove)(?: about| that)? (?P<query>my .+?)(?: from (?:your )?memory)?",
    r"(?:forget|delete|erase) (?:what|everything) i (?:told|said to) you about (?P<query>.+)",
    r"do not remember (?P<query>my .+?) any ?more",
)
def _forget(match: re.Match[str]) -> Intent:
    return Intent("forget", {"query": clean_slot(match.group("query"))})


# "clear my shopping list": the whole list goes.
@template(
    r"(?:clear|empty|delete|wipe|reset|erase|clean out|start) (?:out )?(?:my|the) (?P<list>[\w -]*?list)(?: again| over)?"
)
def _list_cleared(match: re.Match[str]) -> Intent:
    return Intent("forget", {"query": f"my {clean_slot(match.group('list'))}"})


# "take the eggs off my shopping list", "remove milk from the shopping list".
@template(
    r"(?:take|remove|delete|cross|strike|scratch) (?P<item>.+?) (?:off|off of|from) (?:my|the) (?P<list>[\w -]*?list)",
)
def _list_removal(match: re.Match[str]) -> Intent:
    return Intent("forget", {"query": clean_slot(match.group("list")), "item": clean_slot(match.group("item"))})


@template(
    r"(?:remember|memori[sz]e|note|keep in mind|do not forget)(?: that)? (?P<text>.+)",
    r"(?:make a note|take a note)(?: that)? (?P<text>.+)",
)
def _remember(match: re.Match[str]) -> Intent:
    text = clean_slot(match.group("text"))
    return Intent("remember", {"text": text, "kind": memory_kind(text)})


# Lists are kept as memories, one item each, and read back by a recall of the list.
@template(r"(?:add|put) (?P<item>.+?) (?:to|on|onto) (?:my|the) (?P<list>[\w -]*?list)(?: too| as well| please)?")
def _list_item(match: re.Match[str]) -> Intent:
    text = list_sentence(clean_slot(match.group("list")), [clean_slot(match.group("item"))])
    return Intent("remember", {"text": text, "kind": "fact"})


def memory_kind(text: str) -> str:
    """ "preference" for a liking ("I love jazz", "my favourite food is ramen"), else "fact"."""
    return "preference" if _PREFERENCE.search(text.lower()) else "fact"


# Statements of fact about the user: kept as facts so that later questions can be answered. Only
# unambiguous shapes ("my X is Y", "I live in", "call me"): "I am tired" is a mood, not a fact.
@template(
    r"(?P<text>my (?:\w+(?:'s)? ){0,3}(?:name|names|birthday|address|job|age|favou?rite \w+|email|number|phone number|"
    r"code|password|pin|passcode|combination|username|user name) (?:is|are) .+)",
    r"(?P<text>i (?:live|grew up|was born|work|study|stay) (?:in|at|on|for|as) .+)",
    r"(?P<text>my (?:\w+(?:'s)? ){1,3}(?:lives|lived|works|worked|studies|moved|grew up|was born) (?:in|at|to|for) .+)",
    r"(?P<text>i am (?:from|allergic to|married to|a vegetarian|vegetarian|vegan|\d+ years old) ?.*)",
    r"(?P<text>i have (?:a|an|two|three|\d+) (?:\w+ ){0,2}(?:called|named) .+)",
    # The family and pets, named: "I have two kids, Maya and Leo", "we have a cat: Miso".
    r"(?P<text>(?:i|we) have (?:a|an|one|two|three|four|five|\d+) (?:\w+ ){0,2}(?:kids?|children|child|sons?|daughters?|"
    r"brothers?|sisters?|siblings?|grandchildren|grandkids|dogs?|cats?|pets?|puppy|kitten|rabbits?|hamsters?)"
    r"(?:,|:| -| called| named) .+)",
    r"(?P<text>my (?:\w+(?:'s)? ){1,3}(?:is|are) (?:called|named) .+)",
    # Where something was put: "I put my passport in the top drawer", "I parked on level 2".
    r"(?P<text>i (?:put|left|keep|hid|stored|placed|stashed) (?:my|the|our) [\w' -]+? "
    r"(?:in|on|under|behind|inside|next to|beside|at|by) .+)",
    r"(?P<text>i (?:parked|left the car) (?:in|on|at|by|near|outside) .+)",
    r"(?:you can |please )?call me (?P<name>[\w'-]+(?: [\w'-]+)?)(?: from now on| instead)?",
    # A liking about a thing, not a person or the conversation ("I love you", "I like that" are not).
    r"(?P<text>i (?:like|love|prefer|enjoy|hate|dislike|cannot stand) "
    r"(?!you\b|it\b|that\b|this\b|them\b|him\b|her\b|talking\b|chatting\b)\w.*)",
    # "I'm Priya", "hi, I am Sam": a name, told by its capital (a transcript writes "I'm tired" lower).
    r"(?:(?:hi|hello|hey)(?: there)?(?: coda)?,? )?(?:I am|this is) (?P<name>(?-i:[A-Z])[\w'-]+)",
)
def _fact(match: re.Match[str]) -> Intent:
    name = match.groupdict().get("name")
    text = f"my name is {name}" if name else clean_slot(match.group("text"))
    return Intent("remember", {"text": text, "kind": memory_kind(text)})


#: What a question about "my ..." asks of a service Coda has no access to, not of its memory.
_NOT_TOLD = frozenset({"track packages or orders", "control devices in your home"})


@template(
    r"what do you (?:remember|know|recall) about (?P<query>.+)",
    r"what did i (?:tell|say to) you about (?P<query>.+)",
    r"do you (?:remember|know|recall) (?:what |about )?(?P<query>.+)",
    r"(?:recall|search (?:your )?memory for) (?P<query>.+)",
    # "remind me what my wifi password is", "remind me where I parked": a question for the memory.
    r"remind me (?:of |about )?(?P<query>(?:what|where|when|who|how|which) .+)",
    r"remind me (?:of|about) (?P<query>my .+)",
    r"look up (?P<query>(?:my|what i|where i|when i|who i) .+)",
    r"what (?:is|are|was|were) (?P<query>my .+)",
    r"who (?:is|are|was|were) (?P<query>my .+)",
    # "where" and "when" stay in the query: they match what was told ("where is my car?" finds "I
    # parked on level 3", which "my car" alone does not).
    r"(?P<query>(?:where|when) (?:is|are|was|were) my .+)",
    r"(?:who|where|when|what|how) (?:does|did|do) (?P<query>my .+)",
    r"what do you remember",
    r"what do you know about me",
    r"(?P<query>(?:where|what|who|when|how old) (?:do|did|am|was) i (?:live|from|work|do for (?:a living|work)|born|study|called|named))",
    r"(?P<query>(?:who|how old) am i)",
    # Where the user left something: "where did I park?", "where did I put my keys?".
    r"(?P<query>(?:where|when) did i (?:park|put|leave|hide|store|keep|lock) ?.*)",
    r"(?P<query>how do i (?:like|take|have) .+)",
    r"what (?:do i|did i say i) (?:like|love|prefer|enjoy|hate|dislike)(?P<query> .+)?",
    r"what (?:is|do i have|have i got|is there) on (?P<query>(?:my|the) [\w -]*?list)",
    r"(?:read|tell|show|give) me (?:what is on )?(?P<query>(?:my|the) [\w -]*?list)",
    r"(?P<query>(?:am i|what am i) allergic to(?: anything)?|do i have (?:any )?allergies)",
    r"do you (?:know|remember) (?P<query>(?:my|where i|what i|who i|how old i) .+)",
)
def _recall(match: re.Match[str]) -> Intent | None:
    # "the shopping list" is the user's list; "the garage" stays as said.
    query = re.sub(r"^the (?=[\w -]*list$)", "", clean_slot(match.groupdict().get("query") or ""), flags=re.IGNORECASE)
    if unsupported(re.sub(r"^(?:where|when) (?:is|are|was|were) ", "", query, flags=re.IGNORECASE)) in _NOT_TOLD:
        return None  # "where is my amazon package", "what is my schedule": not something the user told
    return Intent("recall", {"query": query or "me"})
