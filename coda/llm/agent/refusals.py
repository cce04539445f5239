"""What Coda cannot do on its own, told by the words of a request ("what's the weather like").

It runs offline with no connected services, so a request for live information (weather, news,
sports results, prices, parcels, timetables) or for a device, a message or a purchase gets an honest
"I can't" from the intent agent, never an answer a small language model might make up. Patterns
are anchored on phrases, not single words: "what is the volume of a sphere" and "who invented the
television" are questions, "turn the volume up" and "what's on TV tonight" are not.
"""

from __future__ import annotations

import re

_HOME = (
    r"(?:the|my|all the|all|kitchen|bedroom|living room|lounge|bathroom|hall(?:way)?|porch|garden|office|ceiling|"
    r"desk|bedside|front|back|robot)"
)
_CURRENCY = r"(?:dollars?|euros?|pounds? sterling|sterling|yen|yuan|rupees?|francs?|pesos?|bitcoins?|usd|eur|gbp)"

# What Coda cannot do on its own (it runs offline, with no connected services), found anywhere in an
# utterance that no template matched. Each is answered with an honest "I can't", never by a model that
# might make up a forecast or a score.
_UNSUPPORTED: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), what)
    for p, what in [
        # A reminder the templates could not read ("remind me in the evening to call mom", a misheard
        # "remind me of on Friday ..."): asked for a time, never left to a model that says "I'll call".
        (r"^(?:remind me|(?:set|create|make|add) (?:a |me a )?reminder)\b", "set that reminder"),
        (r"\b(?:weather|forecast|rain(?:ing|y)?|snow(?:ing|y)?|sunny|humid(?:ity)?|umbrella|wind(?:y)?|"
         r"storm(?:y|s)?|fog(?:gy)?|hail(?:ing)?|thunder\w*|frost(?:y)?|"
         r"need (?:a |an |my )?(?:coat|jacket|scarf|gloves|sunscreen|sun cream)|"
         r"temperature (?:outside|today|tomorrow|now|in)|how (?:hot|cold|warm) is it|pollen(?: count)?|"
         r"air quality|uv index|uv levels?|(?:like|be) outside|going to be (?:nice|warm|cold|hot|wet|dry)|"
         r"nice day (?:today|tomorrow|for)|(?:what|how) is it (?:going to be |gonna be )?like (?:today|tomorrow|this "
         r"(?:weekend|week|afternoon|evening)))\b", "check the weather"),
        (r"\b(?:sunrise|sunset|sun (?:rise|set|come up|go down|goes down|comes up)|tides?|high tide|low tide)\b",
         "look up sunrise, sunset or tide times"),
        (r"\b(?:news|headlines?|top stories|today's stories|current events)\b|what is happening in the world|"
         r"\b(?:latest|current|new) (?:\w+ )?(?:rules|guidance|guidelines|restrictions|regulations|laws|updates?)\b",
         "read the news"),
        (r"\b(?:scores?|who won|standings|fixtures|kick ?off)\b|\bwho(?:'s| is) playing\b|"
         r"\b(?:football|soccer|basketball|baseball|cricket|rugby|tennis|hockey) (?:tonight|today|tomorrow|"
         r"this weekend|game|match)\b|"
         r"\bhow did (?!you\b|i\b|we\b|it\b|that\b)[\w ]+ (?:do|get on|play)\b|"
         r"\b(?:did|do|does|will|have|has) (?:the )?(?!you\b|i\b|we\b|it\b|that\b|they\b|he\b|she\b)[\w ]+ "
         r"(?:win|won|lose|lost|beat|draw|score)\b|\bwhen (?:do|does|is|are) (?:the )?[\w ]+ (?:play|playing) (?:next|again)\b|"
         r"\b(?:game|match|race) (?:results?|last night|yesterday|today|tonight)\b", "look up live sports results"),
        (r"\b(?:packages?|parcels?|deliver(?:y|ies)|tracking number|my (?:amazon |online )?orders?)\b|"
         r"\b(?:my|our) [\w ]+? (?:be |get |being |been |was |were )?delivered\b",
         "track packages or orders"),
        (r"\b(?:next|last) (?:bus|train|tram|flight|ferry|subway|metro)\b|"
         r"\b(?:bus|train|tram|flight|ferry) (?:times|schedule|timetable|status)\b|\bis my (?:flight|train|bus)\b|"
         r"\b(?:is|are) (?:the )?(?![\w' ]*\b(?:doors?|windows?|gates?|garage|fridge|oven|blinds|curtains)\b)[\w' ]+ (?:still )?open(?: (?:now|today|tonight|tomorrow|right now|on \w+|late|yet))?$|"
         r"\bopening (?:hours|times)\b|\bwhat time does (?:the )?[\w' ]+ (?:open|close)\b|"
         r"\b(?:gas|petrol|fuel|diesel) prices?\b|\bwhat is on (?:tv|television)\b|"
         r"\bhow much (?:is|are|does|do|would|will) (?:a |an |the )?(?:\w+ )?(?:flights?|plane tickets?|train tickets?|"
         r"tickets?|hotels?|hotel rooms?|taxis?|cabs?|uber|fares?)\b|\b(?:cheap(?:est)?|prices? of) (?:flights?|hotels?)\b|"
         r"\bwhat is (?:new |good |on |showing )*on (?:netflix|hulu|disney(?: plus|\+)?|prime(?: video)?|hbo(?: max)?|"
         r"apple tv|youtube|iplayer)\b|\bnew (?:on|to) (?:netflix|hulu|disney(?: plus|\+)?|prime(?: video)?|hbo)\b|"
         r"\b(?:cinema|movie theater|movie theatre|theatre|theater) (?:tonight|today|listings|times|this week)\b|"
         r"\b(?:showing|playing|on) at the (?:cinema|movies|theater|theatre)\b|\bshow ?times\b|"
         r"\bwhat (?:movies|films) are (?:showing|playing|on)\b",
         "look up timetables, listings, opening hours or prices"),
        # "shares", not the verb: "share the pizza three ways" is arithmetic.
        (r"\b(?:stocks?|shares|share prices?|(?:a|per|one) share|stock market|exchange rate|bitcoin|crypto\w*|nasdaq|"
         r"dow jones)\b|\b(?:price of|how much (?:is|are|does|do)) (?:a |the )?(?:litre of |liter of |gallon of )?"
         r"(?:petrol|gas|gasoline|diesel|fuel|electricity)\b|\b(?:petrol|gas|diesel|fuel) prices?\b",
         "look up prices or markets"),
        (r"\b(?:bank|account|credit card|card) (?:balance|statement|transactions?)\b|\bmy (?:bank|savings|checking|current) "
         r"account\b|\bhow much money (?:do i have|is (?:left )?in my)\b|\b(?:pay|transfer|send) (?:\$|£|€)?\d+\b.*\bto\b|"
         r"\bhow much (?:did|have|do) (?:i|we) (?:spen[dt]|earn|owe)\b|\bmy (?:spending|expenses|budget|bills?)\b",
         "see or use your bank accounts"),
        (rf"\b{_CURRENCY}\b.*\b(?:in|to|into)\b.*\b{_CURRENCY}\b", "look up prices or markets"),
        (r"\b(?:show|display) me\b.*\b(?:pictures?|photos?|images?|videos?|movies?|maps?)\b|"
         r"\b(?:pictures?|photos?|images?) of\b|\b(?:open|launch|start) (?:netflix|youtube|spotify|the tv)\b|"
         r"^(?!.*\b(?:podcasts?|radio|audiobooks?|music|songs?|albums?|playlists?)\b).*"
         r"\b(?:play|put on|watch|show|find)\b.*\b(?:youtube|videos?|movies?|films?|episodes?|netflix|tv shows?|trailers?)\b",
         "show pictures, videos or apps"),
        (r"\b(?:traffic|directions|route to|how do i get to|commute|navigate)\b|\bnear me\b|"
         r"\b(?:nearest|closest) (?:petrol|gas|station|shop|store|restaurant|pharmacy|hospital|atm|cafe|"
         r"supermarket|bank)\b|\bnearby\b|\baround here\b|\bin (?:my|the) area\b",
         "look up places, traffic or directions"),
        (r"\btrending\b|\bwhat is (?:new |happening )?on (?:twitter|x|tiktok|instagram|facebook|reddit)\b|"
         r"\b(?:post|tweet|share) (?:this |that |it )?(?:on|to) (?:twitter|x|tiktok|instagram|facebook|reddit)\b",
         "check or post on social media"),
        (r"^(?:message|text|e-?mail|whats ?app|sms|call|phone|ring|dial|facetime|video call) (?!me\b)\w+|"
         r"\b(?:send|write|text|e-?mail|message|call|phone|ring|dial)\b.*\b(?:to|my|him|her|them|mom|mum|dad|"
         r"wife|husband|boss|friend|someone|\w+@\w+)\b|\b(?:send|text) (?:a |an )?(?:message|text|e-?mail)\b|"
         r"\b(?:read|check|show|open|play)(?: me)? (?:my|the) (?:new |latest |unread |last )?(?:messages|texts|e-?mails?|"
         r"inbox|voice ?mails?|notifications|missed calls)\b|\b(?:do i have|are there|have i got) (?:any )?(?:new |unread )?"
         r"(?:messages|texts|e-?mails|voice ?mails?|missed calls)\b",
         "read or send messages, or make calls"),
        (r"\b(?:order|buy|purchase|book|reserve|deliver)\b.*\b(?:me|a|an|some|tickets?|table|pizza|food|"
         r"taxi|uber|cab|flight|hotel|groceries|online)\b|^(?:order|buy|purchase|re-?order)(?! of\b) \w+|"
         r"\b(?:get|call|order|book) (?:me |us )?(?:an? )?(?:uber|lyft|taxi|cab|ride)\b|"
         r"\b(?:to|in|into|from|on) my (?:amazon |online |shopping )?(?:cart|basket|trolley|wish ?list|order)\b|"
         r"\bcheck ?out (?:my |the )?(?:cart|basket|order)\b|\bmy amazon\b|\breservations?\b",
         "order, buy or book things"),
        (r"\b(?:play|put on|listen to)\b.*\b(?:music|songs?|tunes|album|playlist|radio|podcast|audiobook|spotify|"
         r"by|jazz|rock|pop|classical|blues|hip ?hop|rap|country|folk|reggae|metal|techno|disco|soul|funk|"
         r"opera|lo-?fi|beatles|queen|mozart|beethoven)\b|"
         r"^(?:pause|resume|skip|stop|replay|shuffle)(?: (?:the |this |that )?(?:music|song|track|video|movie|show|"
         r"podcast|playback|playlist))$|^(?:play )?(?:the )?(?:next|previous|last) (?:song|track|episode)$|"
         r"\bwhat (?:song|music|track) is (?:this|playing)\b", "play music"),
        (r"\b(?:turn|switch|shut) (?:on|off)\b|\b(?:dim|brighten)\b|\b(?:thermostat|air ?con\w*|unlock)\b|"
         r"\block (?:the |my )?(?:\w+ )?(?:door|gate|car|garage)\b|"
         # A light, a lamp, the heating or a vacuum of the house, not "how fast does light travel".
         rf"\b{_HOME} (?:lights?(?! ?(?:bulbs?|years?|speed|waves?|spectrum)\b)|lamps?|heating|heater|radiators?|fan|"
         r"vacuum(?: cleaner)?|hoover)\b|"
         r"\b(?:turn|switch|put|shut|flick) (?:the |my |all the |all )?[\w ]*?(?:lights?|lamps?|heating|heater|fan|"
         r"radio|tv|telly)\b ?(?:on|off|up|down)\b|\b(?:start|run) the (?:robot )?(?:vacuum|hoover)\b|"
         r"\b(?:make|get) it (?:warmer|cooler|colder|hotter) in\b|\b(?:warmer|cooler|colder|hotter) in (?:here|the house)\b|"
         r"\b(?:turn|crank|bring|put|set) (?:the |it )?(?:volume|sound)\b|\bvolume (?:up|down|to)\b|"
         r"^(?:(?:a bit |a little )?(?:louder|quieter)|mute|unmute)(?: please)?$|^(?:mute|unmute) (?:the |yourself|it)\b|"
         r"\b(?:open|close|shut|raise|lower) (?:the )?(?:garage(?: door)?|blinds|curtains|shades|shutters|gate|windows?)\b|"
         r"^(?:is|are) (?:the |my )?[\w' ]*?(?:doors?|windows?|gates?|garage|blinds|curtains) (?:still )?"
         r"(?:open|closed|shut|locked|unlocked)\b|"
         r"\b(?:preheat|start|run) the (?:oven|dishwasher|washing machine|dryer|kettle|coffee (?:machine|maker))\b|"
         r"\b(?:on|change) (?:the )?(?:tv|television|channel)\b|"
         r"\b(?:arm|disarm) the (?:alarm|security)\b|\b(?:find|locate|ring) my (?:phone|tablet|watch|earbuds)\b|"
         r"\bwhere is my (?:phone|tablet|watch|earbuds)\b|\bwho is at the (?:\w+ )?door\b|\bdoorbell\b|"
         r"\b(?:take|snap) (?:a |an |my )?(?:photo|picture|selfie|screenshot|video)\b|\brecord (?:a |this |the )?"
         r"(?:video|conversation|call|meeting)\b|"
         r"\b(?:show|check|see|view|open)\b.*\b(?:door|security|garden|front|back|baby) ?cameras?\b|"
         r"\b(?:door|security|garden|front|back|baby) ?cameras?\b.*\b(?:show|see|check|anyone|anything)\b",
         "control devices in your home"),
        (r"\b(?:search (?:the )?(?:web|internet|online)|google|look (?:it |this |that )?up online|browse|"
         r"website)\b|\b(?:find|search|look up|get)\b.*\b(?:online|on the (?:web|internet))\b|"
         r"^(?:look up|search for|find (?:me )?(?:some )?(?:info|information) (?:on|about)) (?!my\b|what i\b|where i\b)",
         "search the internet"),
        (r"\b(?:calendar|appointments?|my meetings?|my schedule|agenda)\b", "see your calendar"),
        # Chores and errands: the small model answered "make me a coffee" with a recipe.
        (r"^(?:make|fetch|bring|get|cook|brew|pour|fix|clean|tidy|fold|wash|iron|vacuum|hoover|feed|walk|water) "
         r"(?:me |us )?(?:up )?(?:a |an |some |the |my |our )?(?:cup of |glass of |pot of )?(?:coffee|tea|espresso|latte|drink|"
         r"sandwich|breakfast|lunch|dinner|supper|snack|food|toast|beer|wine|water|laundry|dishes|room|house|kitchen|"
         r"bed|dog|cat|plants?|car)\b", "do things in the physical world"),
        (r"\b(?:set|wake me|make) (?:an? |me an? )?alarm\b|\bwake me up\b|\bremind me (?:on|next|every)\b",
         "set that alarm"),
    ]
]  # fmt: skip


def unsupported(utterance: str) -> str | None:
    """What the user asked for that Coda cannot do ("check the weather"), or None."""
    for pattern, what in _UNSUPPORTED:
        if pattern.search(utterance):
            return what
    return None
