"""Deterministic building blocks of `app.memory.extract.HeuristicExtractor` (plain strings in, plain
data out; no I/O, no model, nothing imported from the rest of memchat).

Documented choices:

* **Verbatim facts.** A fact is the user's own sentence, first person, *verbatim* except for light
  normalisation: leading fillers/greetings stripped ("Oh, by the way, ..."), a lone ``i`` capitalised,
  first letter capitalised, terminal punctuation normalised to ``.``, and relative dates annotated.
  Verbatim first-person text retrieves best against first-person queries ("where do I live?").
* **Which sentences are facts** (`drop_reason`): a first-person statement (I / my / we / our / me ...,
  or with the subject dropped as chat is written: "Took a trip to Oslo.", "Been learning the cello.")
  of at least 3 words (a contraction counts as two) that is not a question (``?`` or interrogative
  opening), greeting or chit-chat, request to the assistant (imperative opening, "can you", "I want you
  to", "let's"), talk about the conversation ("I meant ...", "here's my code", "I'm not sure"), addressed
  to the assistant ("you"/"your"), or hypothetical ("if ...", "imagine ..."). A sentence that states one
  of the attributes below is kept even when short or addressed to the assistant ("I'm 34.", "Call me Al.").
  Fenced/inline code, sentences longer than 400 characters, and everything after a request introducing
  pasted material ("Summarize this: ...") are ignored. Only the user's messages are read.
* **Relative dates** (`app.memory.relative_dates.resolve_relative_dates`) are resolved against the turn's UTC date and annotated
  after the phrase: ``yesterday`` -> ``yesterday (on 2026-11-23)``. Supported: today/tonight/this
  morning.., yesterday/last night, tomorrow, the day before yesterday / after tomorrow, last|next|this
  <weekday> (last = the latest such day strictly before, next = the first strictly after, this = the one
  in the same Monday-Sunday week), last|next|this week (``(week of <Monday>)``), month (``(in YYYY-MM)``),
  year (``(in YYYY)``), and "N days|weeks|months|years ago".
* **Entities** (`extract_entities`): runs of capitalised words (joined by of/de/van/...), at sentence
  start only when the word is not a pronoun/common word; possessive ``'s`` stripped; "quoted names";
  ISO dates (written or resolved). Weekday and month names are not entities.
* **Attributes** for deterministic supersession live in `app.memory.attributes`.
"""

from __future__ import annotations

import re

from app.memory.relative_dates import ISO_DATE, MONTHS, WEEKDAYS

# --------------------------------------------------------------------------- sentences

_CODE_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]”’]*\s+")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d{1,2}[.)])\s+")
_ABBREV = re.compile(
    r"(?:\b(?:mr|mrs|ms|dr|st|jr|sr|prof|vs|etc|approx|no|inc|ltd|co|mt|ft|e\.g|i\.e|a\.m|p\.m|u\.s)\.|\b[A-Z]\.)$",
    re.I,
)
MAX_SENTENCE_CHARS = 400


def user_sentences(text: str) -> list[str]:
    """`split_sentences` of a user message, cut at a request that introduces pasted material
    ("Summarize this: ...", "Translate the following:"): what follows is not about the user."""
    out: list[str] = []
    for sentence in split_sentences(text):
        head, colon, _ = sentence.partition(":")
        first = head.split()[0].lower().strip(",.!") if head.split() else ""
        if colon and first in _IMPERATIVE and not _CALL_ME.match(sentence):
            break
        out.append(sentence)
    return out


def split_sentences(text: str) -> list[str]:
    """Sentences of a message: code removed, split on lines/bullets and on . ! ? (not after abbreviations)."""
    text = _INLINE_CODE.sub(" ", _CODE_FENCE.sub("\n", text or "")).replace("’", "'").replace("‘", "'")
    out: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        pieces = _SPLIT.split(line)
        merged: list[str] = []
        for piece in pieces:
            if merged and _ABBREV.search(merged[-1]):
                merged[-1] = f"{merged[-1]} {piece}"
            else:
                merged.append(piece)
        out.extend(" ".join(p.split()) for p in merged if p.strip())
    return out


_GREETING = re.compile(
    r"^(?:hi|hey|hello|hiya|howdy|yo|good (?:morning|afternoon|evening))(?:\s+[\w']+){0,2}\s*[,!.:;-]+\s*", re.I
)
_FILLER = re.compile(
    r"^(?:oh|ah|well|so|btw|by the way|also|and|but|actually|anyway|anyways|ok|okay|yeah|yes|yep|no|nope|um+|uh+|"
    r"hmm+|fyi|just so you know|for the record|for context|thanks|thank you|lol|haha+|cool|great|sure|alright|right|"
    r"sorry|oops|basically|honestly|"
    r"hi|hey|hello|oh and|and also|plus|(?:please\s+)?(?:remember|note|know|keep in mind|don't forget)\s+that|"
    r"i(?:\s+want|\s+need|\s+would like|'d like)\s+you\s+to\s+(?:know|remember|note)\s+that)(?:\s*[,!.:;-]+\s*|\s+)",
    re.I,
)
_LONE_I = re.compile(r"(?<![\w'])i(?=$|[\s']|[,;:!?])")


def clean_sentence(sentence: str) -> str:
    """Strip leading greetings/fillers, capitalise a lone ``i`` and the first letter."""
    s = sentence.strip()
    for _ in range(6):
        stripped = _GREETING.sub("", s, count=1)
        stripped = _FILLER.sub("", stripped, count=1)
        if stripped == s or not stripped.strip(" .,!?"):
            break
        s = stripped.strip()
    s = _LONE_I.sub("I", s)
    return s[:1].upper() + s[1:] if s else s


def finalize(sentence: str) -> str:
    """Terminal punctuation normalised to a single period."""
    return sentence.rstrip(" .!?…;:,") + "."


# --------------------------------------------------------------------------- fact / non-fact

_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
_FIRST_PERSON = re.compile(
    r"\b(?:i|i'm|i've|i'd|i'll|im|ive|my|mine|myself|me|we|we're|we've|we'd|we'll|our|ours|ourselves|us)\b", re.I
)
_WH = {"what", "who", "whom", "whose", "where", "when", "why", "how", "which", "what's", "who's", "where's",
       "how's", "when's", "why's", "whats", "hows", "wheres"}
_AUX = {"is", "are", "am", "was", "were", "do", "does", "did", "can", "could", "would", "will", "should", "shall",
        "may", "might", "must", "have", "has", "had", "isn't", "aren't", "don't", "doesn't", "didn't", "can't",
        "couldn't", "wouldn't", "won't", "shouldn't", "wasn't", "weren't", "haven't", "hasn't"}
_SUBJECTS = {"you", "i", "we", "it", "he", "she", "they", "there", "this", "that", "your", "my", "the", "a", "an",
             "u", "ya", "anyone", "someone", "any", "these", "those"}
_WH_NEXT = {"old", "much", "many", "long", "far", "often", "come", "about", "else", "kind", "sort", "type", "do",
            "to"} | _AUX
_IMPERATIVE = {
    "write", "tell", "give", "show", "help", "explain", "make", "create", "generate", "list", "translate",
    "summarize", "summarise", "find", "suggest", "recommend", "draft", "compose", "describe", "remind", "please",
    "send", "calculate", "compute", "fix", "rewrite", "check", "search", "look", "provide", "teach", "define",
    "compare", "convert", "draw", "sing", "say", "continue", "repeat", "try", "use", "imagine", "pretend", "act",
    "plan", "book", "name", "think", "consider", "keep", "stop", "forget", "remember", "note", "add", "remove",
    "answer", "respond", "reply", "edit", "proofread", "format", "shorten", "expand", "improve", "analyze",
    "analyse", "read", "go", "do", "let", "let's", "lets", "call", "give", "code", "debug", "refactor", "implement",
    "brainstorm", "outline", "review", "assume", "ignore",
}
_CHITCHAT = re.compile(
    r"^(?:hi|hey|hello|hiya|yo|sup|good (?:morning|afternoon|evening|night)|thanks?(?: you)?(?: so much| a lot)?|"
    r"thx|ty|ok|okay|k|lol|lmao|haha+|hehe+|cool|nice|great|awesome|perfect|sure|yes|no|yep|nope|yeah|nah|bye|"
    r"goodbye|see you|cheers|wow|oh|ah|hmm+|i see|got it|sounds good|makes sense|that's (?:great|nice|cool|"
    r"helpful|perfect|funny|interesting)|how are you(?: doing)?(?: today)?|what's up|i'm (?:fine|good|ok|okay|"
    r"great|well|alright|doing (?:well|good|great|fine|ok|okay)|back|here|sorry|not sure|curious|confused|bored|"
    r"just curious|just asking|kidding|joking|tired|hungry|sleepy|bored|busy|so tired|exhausted)|i am (?:fine|good|ok|okay|great|well|sorry|not sure)|"
    r"i (?:agree|understand|know|guess|guess so|think so|hope so|dunno|don't know|do not know|see what you mean|"
    r"love it|like it|like that|love that|love this|like this|appreciate it|appreciate that|mean)|me too|"
    r"my bad|my pleasure|no problem|no worries|you too|same here|all good|that's (?:all|it)|nothing else|"
    r"not really|not yet|not at all|of course|no thanks)"
    r"(?:[\s,]+(?:thanks|thank you|too|now|for now|today|lol|haha|then|a lot|so much|again|man|dude|buddy))*$",
    re.I,
)
_META = re.compile(
    r"^i (?:have|got|'ve got) (?:a|another|one more|some|two|a few)(?: quick| small| follow-up| followup| last)? "
    r"questions?\b|^i(?:\s+need|\s+want|\s+would like|'d like) (?:some |your |a little |more )?(?:help|advice|assistance|"
    r"ideas|suggestions|recommendations|tips|feedback)\b|^i(?:\s+want|\s+need|\s+would like|'d like|\s+wanted) you to\b|"
    r"^i (?:don't|do not|didn't|did not) (?:understand|get it|follow)\b|^i (?:meant|mean|was asking|"
    r"was just asking|asked)\b|^i (?:was wondering|wonder|am wondering|'m wondering)\b|"
    r"\byou(?:'re| are) (?:right|wrong|welcome|correct|amazing|great|awesome|the best|so helpful|helpful)\b|"
    r"\byour (?:answer|response|reply|suggestions?|poem|story|joke|explanation|code|help|ideas?|advice|summary|"
    r"last message|previous message|message|list)\b|\b(?:can|could|would|will) you\b|"
    r"^i(?:\s+want|\s+need|\s+would like|'d like) (?:a|an|some|the) (?:poem|joke|story|list|summary|recipe|email|letter|"
    r"essay|code|script|song|haiku|explanation|example|draft|translation|outline|ideas?|suggestions?)\b",
    re.I,
)
_ADDRESSED = re.compile(r"\b(?:you|your|yours|yourself|u|ur)\b", re.I)
_CONVERSATIONAL = re.compile(
    r"^(?:here's|here is|here are|below is|attached is|following is)\b|\bwhat i (?:asked|meant|said|wanted)\b|"
    r"^i (?:don't|do not) (?:think|know (?:what|why|if|whether|about|which|where))\b|"
    r"^i(?:'m| am) not sure\b|^i (?:got it|get it|see|understand)(?:\s+(?:now|then|thanks|thank you))?\s*(?:[,.!;:-]|$)",
    re.I,
)
# A first-person statement with its subject dropped, as chat is written ("Took a trip to Oslo.", "Been
# learning the cello.", "Just finished my thesis."): the sentence opens with a past-tense verb (a regular
# -ed form or a common irregular one), optionally after an adverb of time.
_DROPPED_SUBJECT = re.compile(
    r"^(?:(?:just|finally|recently|already|also|then|today|yesterday|last \w+|this \w+)\s+)?"
    r"(?:(?!(?:based|related|called|named|supposed|used|need|indeed|speed|seed|feed|bed|red|shed|bleed|proceed)\b)"
    r"[a-z]{2,}ed|took|went|got|made|had|saw|bought|found|met|been|began|started|finished|spent|came|left|"
    r"moved|sold|won|lost|ran|wrote|read|built|brought|caught|taught|thought|felt|kept|drove|flew|gave|"
    r"heard|held|paid|sent|sat|slept|spoke|stood|swam|threw|wore|ate|drank|broke|chose|forgot|grew|hit|"
    r"knew|led|quit|rode|sang|sold|told|understood|woke|won)\s+\w",
    re.I,
)
_CALL_ME = re.compile(r"^(?:please\s+)?call me\b", re.I)
_HYPOTHETICAL = re.compile(r"^(?:if|imagine|suppose|supposing|pretend|assuming|what if|let's say)\b|\bif i were\b", re.I)


def drop_reason(sentence: str, *, has_attributes: bool = False) -> str | None:
    """Why ``sentence`` (already `clean_sentence`-ed) is not a durable user fact, or None to keep it."""
    s = sentence.strip()
    words = [w.lower() for w in _WORD.findall(s)]
    if not words:
        return "empty"
    if len(s) > MAX_SENTENCE_CHARS:
        return "too long"
    if s.rstrip(" .!\"')").endswith("?"):
        return "question"
    bare = s.strip(" .!?…\"'()").lower()
    if _CHITCHAT.match(bare):
        return "chit-chat"
    first, second = words[0], (words[1] if len(words) > 1 else "")
    if first in _WH and (len(words) == 1 or second in _WH_NEXT or "'" in first):
        return "question"
    if first in _AUX and second in _SUBJECTS:
        return "question"
    if _HYPOTHETICAL.search(s):
        return "hypothetical"
    if _META.search(s) or _CONVERSATIONAL.search(s):
        return "request or meta-talk"
    if first in _IMPERATIVE and not _CALL_ME.match(s):
        return "request"
    if has_attributes:
        return None
    if _ADDRESSED.search(s):
        return "addressed to the assistant"
    if not _FIRST_PERSON.search(s) and not _DROPPED_SUBJECT.match(s):
        return "not about the user"
    if len(words) + sum(1 for w in words if "'" in w and not w.endswith("'s")) < 3:
        return "too short"  # contractions count twice: "I'm vegan." is kept, "My bad." is not
    return None


# --------------------------------------------------------------------------- entities

_ENTITY_WORD = re.compile(r"[^\W\d_][\w'&.-]*|\d+")
_CONNECTORS = {"of", "de", "da", "del", "der", "du", "van", "von", "la", "le", "y", "&"}
_NOT_ENTITY = {"i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "lol", "omg", "btw", "fyi", "tbh", "imo"}
_NOT_ENTITY |= set(WEEKDAYS) | set(MONTHS) | {d[:3] for d in WEEKDAYS} | {"mon", "tues", "thurs", "sept"}
COMMON_START = {
    "my", "me", "we", "our", "us", "you", "your", "he", "she", "it", "they", "them", "his", "her", "their", "its",
    "this", "that", "these", "those", "there", "here", "the", "a", "an", "some", "any", "every", "each", "all",
    "both", "no", "none", "and", "but", "or", "so", "because", "since", "although", "though", "when", "while",
    "if", "as", "after", "before", "until", "once", "yesterday", "today", "tomorrow", "tonight", "now", "then",
    "also", "actually", "recently", "currently", "finally", "just", "still", "already", "usually", "always",
    "never", "sometimes", "often", "last", "next", "lately", "soon", "later", "anyway", "maybe", "perhaps",
    "probably", "definitely", "honestly", "basically", "well", "oh", "yes", "yeah", "hi", "hello", "hey",
    "thanks", "please", "in", "on", "at", "for", "from", "to", "with", "about", "during", "over", "under", "by",
    "of", "is", "are", "was", "were", "have", "has", "had", "do", "does", "did", "been", "one", "two", "three",
    "what", "who", "where", "why", "how", "which", "not", "most", "many", "much", "more", "very", "only", "even",
    "mom", "dad", "mum", "family", "work", "home", "like", "love", "currently", "nowadays", "sadly", "luckily",
    "im", "ive", "id", "ill", "dont", "cant",
} | _WH | _AUX | _IMPERATIVE
_TITLES = {"dr", "mr", "mrs", "ms", "st", "prof", "mt", "jr", "sr", "ft"}
_QUOTED = re.compile(r"[\"“]([^\"”\n]{1,60})[\"”]|(?:^|(?<=\s))'([^'\n]{1,60})'(?=[\s.,!?;:]|$)")


def extract_entities(sentence: str) -> list[str]:
    """Proper-name-like spans, quoted names and ISO dates in ``sentence`` (deduplicated, in order)."""
    words = list(_ENTITY_WORD.finditer(sentence))
    spans: list[str] = []
    current: list[str] = []
    pending: list[str] = []  # connectors waiting for a following capitalised word
    prev_end = None

    def flush() -> None:
        if current:
            spans.append(" ".join(current))
        current.clear()
        pending.clear()

    for index, m in enumerate(words):
        raw = m.group(0).rstrip(".")
        title = raw.lower() in _TITLES and m.group(0).endswith(".")
        raw = raw + "." if title else raw
        possessive = raw.lower().endswith("'s")
        word = raw[:-2] if possessive else raw
        gap = sentence[prev_end:m.start()] if prev_end is not None else ""
        if current and gap.strip():
            flush()
        prev_end = m.end()
        low = word.lower()
        is_cap = bool(word) and word[0].isupper() and low not in _NOT_ENTITY
        if is_cap and index == 0 and (
            low in COMMON_START or "'" in low or (low.endswith(("ly", "ing")) and len(words) > 1)
        ):
            is_cap = False
        if is_cap:
            current.extend(pending)
            pending.clear()
            current.append(word)
            if possessive or (m.group(0).endswith(".") and not title):
                flush()
        elif current and low in _CONNECTORS and not possessive:
            pending.append(word)
        else:
            flush()
    flush()
    for m in _QUOTED.finditer(sentence):
        inner = (m.group(1) or m.group(2) or "").strip(" .,!?")
        if inner and len(inner.split()) <= 6:
            spans.append(inner)
    spans.extend(ISO_DATE.findall(sentence))
    return dedupe(spans)


def dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        item = " ".join(item.split())
        key = item.casefold()
        if item and key not in seen:
            seen.add(key)
            out.append(item)
    return out
