"""Conversation: greetings, small talk, thanks, goodbyes, who Coda is, help and status."""

from __future__ import annotations

import re

from coda.llm.agent.intents.base import Intent, template

#: Words of acknowledgement: "okay cool", "got it", "sounds good".
_ACK = (
    r"(?:ok|okay|cool|great|nice|alright|all right|got it|sounds good|perfect|awesome|brilliant|fine|sure|excellent|"
    r"good|right|lovely|noted)"
)


@template(
    r"(?:hi|hello|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening))(?: there)?(?: coda)?",
)
def _greeting(_: re.Match[str]) -> Intent:
    return Intent("greeting")


@template(
    r"(?:(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening))(?: there)?(?: coda)?,? )?"
    r"(?:how are you(?: doing| today| doing today)?|how is it going|how are things|how have you been)(?: coda)?",
    r"(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening))(?: there)?(?: coda)?,? (?:nice|good) to meet you",
    r"(?:nice|good|pleased) to meet you(?: coda)?",
)
def _smalltalk(_: re.Match[str]) -> Intent:
    return Intent("smalltalk")


@template(rf"(?:{_ACK}[, ]+)?(?:thanks|thank you|cheers|thx)(?: (?:very much|so much|a lot))?(?: coda)?")
def _thanks(_: re.Match[str]) -> Intent:
    return Intent("thanks")


# Only the wake word or a word before the request, as when end-pointing cuts at the pause after it
# ("Hey Coda, ..." or "Actually, ..."): asked to go on, not answered by the model (which gave the date).
@template(
    r"(?:hey |ok |okay |hi )?coda",
    r"(?:actually|um+|uh+|erm*|hmm+|so|well|wait|and|but|oh|also|then|like|right so|ok so|okay so|so um+)",
)
def _hesitation(_: re.Match[str]) -> Intent:
    return Intent("hesitation")


# An acknowledgement: "okay cool", "got it", "sounds good". The small model answered "okay cool"
# with "Sure! Today is Sunday, December 6th, 2026. How about you?".
@template(rf"{_ACK}(?:[, ]+{_ACK})*(?:[, ]+(?:then|coda))?")
def _acknowledgement(_: re.Match[str]) -> Intent:
    return Intent("acknowledgement")


# An apology to Coda: "sorry I was rude earlier", "my bad". Not a bare "sorry?", which asks to hear
# something again; the small local model answered "sorry I was rude earlier" with today's date.
_RUDE = r"(?:so |a bit |really |too )?(?:rude|short|mean|grumpy|harsh|snappy|impatient|unkind|cross)"


@template(
    rf"(?:(?:oh|oops|ah)[, ]+)?(?:i am |so |really )*sorry,? (?:i was|for being) {_RUDE}(?: (?:earlier|before|to you|just now))?",
    r"(?:(?:oh|oops|ah)[, ]+)?(?:i am |so |really )*sorry (?:about|for) (?:that|earlier|before|snapping|shouting|yelling|"
    r"the confusion|the mix[- ]?up|my tone|the trouble|bothering you)(?: (?:earlier|before|coda))?",
    r"(?:(?:oh|oops|ah)[, ]+)?(?:my bad|my apologies|i apologi[sz]e(?: (?:for|about) [\w ']+)?)",
)
def _apology(_: re.Match[str]) -> Intent:
    return Intent("apology")


@template(
    r"(?:(?:ok|okay|alright|right|well|thanks|thank you)[, ]+)?(?:that(?:'s| is) (?:all|it)(?: for now)?[, ]+)?"
    r"(?P<words>bye(?: bye)?|goodbye|see you(?: later| soon| tomorrow)?|talk (?:to you )?later|later|good night|night night)"
    r"(?: for now)?(?: coda)?",
)
def _goodbye(match: re.Match[str]) -> Intent:
    return Intent("goodbye", {"night": "night" in match.group("words").lower()})


# Who or what Coda is: answered by the agent, since the small local model once answered "are you a
# real person?" with "Yes, I am a human being."
@template(
    r"(?:are you|r u) (?:a |an )?(?:real |actual |living )?(?:person|human(?: being)?|man|woman|people|alive|real|"
    r"robot|bot|machine|computer|ai|a\.i\.|artificial intelligence|program|chatbot|sentient|conscious)",
    r"(?:who|what) (?:are|r) you(?: exactly| really)?",
    r"(?:what is|tell me) your name",
    r"(?:do you have|have you got) a name",
    r"what (?:should|do|can) i call you",
    r"(?:tell me )?(?:a (?:little |bit )?)?about yourself",
    r"introduce yourself",
    r"(?P<maker>who (?:made|built|created|programmed|designed|wrote|invented|owns) you)",
    # The small model answered "how old are you?" with "I'm an AI language model created by OpenAI".
    r"(?P<age>how old are you|what is your age|when were you (?:born|made|created|built)|when is your birthday)",
)
def _identity(match: re.Match[str]) -> Intent:
    groups = match.groupdict()
    return Intent("identity", {"maker": groups.get("maker") is not None, "age": groups.get("age") is not None})


@template(
    r"help(?: me)?",
    r"what (?:can|do) you do",
    r"what (?:kind of |sort of )?(?:things|stuff) (?:can|could) you (?:help(?: me)?(?: with)?|do)(?: for me)?",
    r"how (?:can|could) you help(?: me)?",
    r"what are you (?:able to(?: do)?|capable of(?: doing)?|good at(?: doing)?)",
    r"what are your (?:capabilities|skills|features)",
    r"what (?:can i|should i) (?:ask|say)(?: you)?",
    r"how (?:do i|can i) use you",
)
def _help(_: re.Match[str]) -> Intent:
    return Intent("help")


@template(
    r"(?:system )?status(?: report)?",
    r"(?:show|give|tell) me (?:the )?(?:system )?status",
    r"are you (?:ok|okay|alright|running|working)",
    r"how is the system(?: doing)?",
)
def _status(_: re.Match[str]) -> Intent:
    return Intent("system_status", {})
