"""Attributes for deterministic supersession (`app.memory.extract.HeuristicExtractor`): plain strings in,
(key, value) pairs out; no I/O, no model.

(key, value) pairs for a small set of
  patterns, matched in first person ("I", "my", "we") and in the extractor style ("The user ...",
  "The user's ..."), so LLM-written memories are comparable too:
  ``residence`` (I live in / I'm based in / I moved [from X] to <Place>) and ``residence:<relative>``
  ("my sister lives in Berlin"); ``name`` ("my name is", "call me") and ``name:<pet|partner|child>``
  ("my dog's name is X", "my dog is called/named X", "I have a dog named X", "X is my dog"; husband,
  wife, boyfriend, ... all map to ``partner``; a qualifier such as "older son" is part of the key,
  "another"/"second"/"new" suppress the match); ``employer`` (I work at/for X, I'm a nurse at X, I got a
  job at X, I joined <Org>); ``occupation`` (I work as a X, I'm a <job word>, I'm retired);
  ``favourite:<thing>``; ``age`` (I'm 34 [years old], I turned 35, my age is); ``relationship``
  (single/married/engaged/divorced/widowed/separated/in a relationship; "got married", "broke up");
  ``prefer:<a|b>`` ("I prefer tea over coffee"); ``likes:<object>`` (like/love/enjoy vs don't like/hate).
  Values compare case-insensitively, articles ignored; one value's words contained in the other's counts
  as the same ("Paris" = "Paris, France"). Same key, different value -> the new fact supersedes.
"""

from __future__ import annotations

import re

from app.memory.extract_heuristic import COMMON_START, split_sentences

_S = r"(?:\bI\b|\bwe\b|\b(?:the\s+)?user\b)"
_BE = r"\s+(?:am|are|is)"
_ADV = r"(?:\s+(?:now|currently|still|recently|just|finally|actually|officially|happily|newly|already|presently))*"
_POSS = r"(?:\bmy|\bour|\b(?:the\s+)?user's)"
_CAPW = r"(?-i:[A-Z][\w'&-]*\.?)"
_CAPS = rf"{_CAPW}(?:\s+(?:(?:of|de|del|la|le|am|upon|sur)\s+)?{_CAPW})*"
_PLACE = rf"(?P<v>{_CAPS})"
_NAME = r"(?P<v>(?-i:[A-Z][\w'-]*)(?:\s+(?-i:[A-Z][\w'-]*))?)"
_ORG = rf"(?P<v>{_CAPS}|(?:a|an|the)\s+[\w-]+(?:\s+[\w-]+){{0,2}})"
_PHRASE = r"[\w' -]{1,40}?"
_END = (r"(?=\s*(?:[.,!;:(]|$)|\s+(?:because|since|as|but|and|now|these days|nowadays|anyway|though|lately|"
        r"a lot|very much|so much|more than|better than|over|too)\b)")
_JOBS = (
    "nurse|doctor|physician|surgeon|teacher|professor|lecturer|engineer|developer|programmer|lawyer|attorney|"
    "accountant|student|designer|architect|chef|cook|baker|writer|author|journalist|editor|scientist|researcher|"
    "manager|consultant|pharmacist|dentist|firefighter|police officer|officer|electrician|plumber|carpenter|"
    "mechanic|farmer|pilot|driver|artist|musician|photographer|analyst|therapist|psychologist|psychiatrist|"
    "paramedic|veterinarian|vet|salesperson|cashier|waiter|waitress|barista|librarian|translator|economist|"
    "banker|entrepreneur|founder|freelancer|contractor|data scientist|intern|nanny|caregiver|social worker|"
    "midwife|soldier|accountant|secretary|assistant|receptionist|technician|coach|trainer|actor|actress|"
    "dancer|singer|student|PhD student|grad student|postdoc|CEO|CTO|CFO|product manager|project manager"
)
_PETS = {"dog": "dog", "puppy": "dog", "pup": "dog", "cat": "cat", "kitten": "cat", "kitty": "cat",
         "hamster": "hamster", "rabbit": "rabbit", "bunny": "rabbit", "parrot": "parrot", "bird": "bird",
         "fish": "fish", "horse": "horse", "turtle": "turtle", "tortoise": "tortoise", "guinea pig": "guinea pig",
         "snake": "snake", "ferret": "ferret", "pet": "pet"}
_PARTNERS = {w: "partner" for w in ("husband", "wife", "spouse", "partner", "boyfriend", "girlfriend", "fiance",
                                    "fiancé", "fiancee", "fiancée")}
_CHILDREN = {"son": "son", "daughter": "daughter", "child": "child", "kid": "child", "baby": "child"}
_NAMED_RELS = {**_PETS, **_PARTNERS, **_CHILDREN}
_RELATIVES = {**_PARTNERS, **_CHILDREN, "sister": "sister", "brother": "brother", "mom": "mother", "mum": "mother",
              "mother": "mother", "dad": "father", "father": "father", "parents": "parents",
              "grandma": "grandmother", "grandmother": "grandmother", "grandpa": "grandfather",
              "grandfather": "grandfather", "grandparents": "grandparents", "best friend": "best friend"}


def _alt(words: dict[str, str]) -> str:
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


_QUAL = r"(?:(?P<q>new|old|older|younger|little|big|elder|eldest|oldest|youngest|first|second|third|other|" \
        r"another|middle|only|twin)\s+)?"
_SKIP_QUAL = {"new", "old", "second", "third", "other", "another"}
_QUAL_NORM = {"older": "older", "elder": "older", "big": "older", "younger": "younger", "little": "younger",
              "eldest": "eldest", "oldest": "eldest", "first": "eldest", "youngest": "youngest",
              "middle": "middle", "twin": "twin", "only": ""}
_NREL = rf"{_QUAL}(?P<rel>{_alt(_NAMED_RELS)})"
_RREL = rf"{_QUAL}(?P<rel>{_alt(_RELATIVES)})"
_STATUS = {"single": "single", "married": "married", "engaged": "engaged", "divorced": "divorced",
           "widowed": "widowed", "separated": "separated", "widow": "widowed", "widower": "widowed",
           "boyfriend": "in a relationship", "girlfriend": "in a relationship", "partner": "in a relationship",
           "husband": "married", "wife": "married", "fiance": "engaged", "fiancé": "engaged",
           "fiancee": "engaged", "fiancée": "engaged"}
_NOT_VALUE = {"moment", "weekend", "weekends", "night", "nights", "home", "time", "same time", "minute", "office",
              "end", "day", "beginning", "least", "most", "first", "it", "this", "that", "them", "you", "him",
              "her", "these", "those", "your", "everything", "nothing", "something", "anything", "lot", "bit"}


def _p(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


# (regex, kind); `_pairs` turns a match of each kind into (key, value) pairs.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (_p(rf"{_S}(?:{_BE})?{_ADV}\s+(?:live|lives|living|reside|resides|residing)\s+in\s+{_PLACE}"), "residence"),
    (_p(rf"{_S}(?:{_BE}|\s+have|\s+has)?{_ADV}\s+(?:moved|relocated)(?:\s+(?:back|house|here|there|away))?"
        rf"(?:\s+from\s+{_CAPS})?\s+to\s+{_PLACE}"), "residence"),
    (_p(rf"{_S}{_BE}{_ADV}\s+based\s+(?:in|out\s+of)\s+{_PLACE}"), "residence"),
    (_p(rf"{_POSS}\s+{_RREL}(?:,?\s+(?-i:[A-Z]\w+),?)?{_ADV}\s+(?:(?:lives?|is\s+living|are\s+living|resides?|"
        rf"is\s+based|are\s+based)\s+in|(?:has\s+|have\s+)?(?:moved|relocated)(?:\s+back)?(?:\s+from\s+{_CAPS})?"
        rf"\s+to)\s+{_PLACE}"), "rel-residence"),
    *((_p(rx), "name") for rx in (
        rf"{_POSS}\s+name\s+is\s+{_NAME}", rf"\bcall\s+me\s+{_NAME}", rf"{_S}\s+go\s+by\s+{_NAME}",
        rf"{_S}(?:{_BE})?\s+(?:called|named)\s+{_NAME}")),
    *((_p(rx), "rel-name") for rx in (
        rf"{_POSS}\s+{_NREL}'s\s+name\s+is\s+{_NAME}", rf"{_POSS}\s+{_NREL}(?:\s+is)?\s+(?:called|named)\s+{_NAME}",
        rf"{_S}\s+(?:have|has|got|adopted|have\s+got)\s+(?:a|an)\s+{_NREL}\s+(?:called|named)\s+{_NAME}",
        rf"^{_NAME}\s+is\s+{_POSS}\s+{_NREL}\b(?!')")),
    (_p(rf"{_S}(?:{_BE})?{_ADV}\s+(?:work|works|working|employed)(?:\s+as\s+(?:a|an)\s+[\w-]+(?:\s+[\w-]+){{0,2}}?)?"
        rf"\s+(?:at|for)\s+{_ORG}"), "employer"),
    (_p(rf"{_S}{_BE}{_ADV}\s+(?:a|an)\s+(?:[\w-]+\s+){{0,2}}?(?:{_JOBS})\s+(?:at|for|with)\s+{_ORG}"), "employer"),
    (_p(rf"{_S}(?:\s+have\s+got|\s+got|\s+have|\s+has|\s+started|\s+accepted|\s+took|\s+landed|\s+found){_ADV}"
        rf"\s+(?:a\s+)?(?:new\s+)?(?:job|position|role|internship)\s+(?:at|with)\s+{_ORG}"), "employer"),
    (_p(rf"{_S}(?:\s+have)?{_ADV}\s+(?:joined|started\s+(?:working\s+)?at)\s+(?P<v>{_CAPS})"), "employer"),
    (_p(rf"{_S}(?:{_BE})?{_ADV}\s+(?:work|works|working|employed)(?:\s+(?:at|for)\s+{_CAPS})?\s+as\s+(?:a|an)\s+"
        r"(?P<v>[\w-]+(?:\s+[\w-]+){0,2})"), "occupation"),
    (_p(rf"{_S}{_BE}{_ADV}\s+(?:a|an)\s+(?P<v>(?:[\w-]+\s+){{0,2}}?(?:{_JOBS}))\b"), "occupation"),
    (_p(rf"{_POSS}\s+(?:job|occupation|profession|job\s+title)\s+is\s+(?:(?:a|an)\s+)?(?P<v>[\w-]+(?:\s+[\w-]+){{0,2}})"),
     "occupation"),
    (_p(rf"{_S}{_BE}{_ADV}\s+(?P<v>retired|unemployed|self-employed|between\s+jobs)\b"), "occupation"),
    (_p(rf"{_POSS}\s+(?:all-time\s+|absolute\s+)?(?:favou?rite|fav|fave)\s+(?P<k>[\w-]+(?:\s+[\w-]+){{0,3}}?)\s+"
        r"(?:is|are|was|has\s+always\s+been)\s+(?P<v>[^,.;!?(]+)"), "favourite"),
    (_p(rf"^(?P<v>{_PHRASE})\s+(?:is|are)(?:\s+still|\s+now)?\s+{_POSS}\s+(?:all-time\s+)?(?:favou?rite|fav|fave)"
        r"\s+(?P<k>[\w-]+(?:\s+[\w-]+){0,3})"), "favourite"),
    (_p(rf"{_S}{_BE}{_ADV}\s+(?P<v>\d{{1,3}})(?=\s*(?:years?\s+old|yrs?\s+old|y/?o)\b|\s*(?:[.,!;(]|$)|"
        r"\s+(?:now|today|this year|and|but|btw|lol|so)\b)"), "age"),
    (_p(rf"{_S}{_ADV}\s+turned\s+(?P<v>\d{{1,3}})\b|{_POSS}\s+age\s+is\s+(?P<v2>\d{{1,3}})\b"), "age"),
    (_p(rf"{_S}{_BE}{_ADV}\s+(?:a\s+)?(?P<v>single|married|engaged(?!\s+(?:in|with|on|by|for)\b)|divorced|widowed|"
        r"separated|widow|widower|in\s+a\s+(?:[\w-]+\s+)?relationship|dating\s+someone|seeing\s+someone)(?![\w-])"),
     "relationship"),
    (_p(rf"{_S}(?:\s+have)?{_ADV}\s+(?:got|gotten)\s+(?P<v>married|engaged|divorced)\b|"
        rf"{_S}(?:\s+have)?{_ADV}\s+(?:broke|broken|split)\s+up\b(?P<up>)|"
        rf"{_S}\s+(?:have|has)\s+a\s+(?P<v2>{_alt(_STATUS)})\b|{_S}{_ADV}\s+married\s+(?P<m>(?-i:[A-Z]))"),
     "relationship"),
    (_p(rf"{_S}{_ADV}\s+(?:prefer|prefers)\s+(?P<a>{_PHRASE})\s+(?:over|to|more\s+than|rather\s+than|instead\s+of|"
        rf"better\s+than)\s+(?P<b>{_PHRASE}){_END}|{_S}{_ADV}\s+(?:like|likes|love|loves)\s+(?P<a2>{_PHRASE})\s+"
        rf"(?:more\s+than|better\s+than|over)\s+(?P<b2>{_PHRASE}){_END}"), "prefer"),
    (_p(rf"{_S}{_ADV}\s+(?:really\s+|absolutely\s+|truly\s+)?(?:love|loves|like|likes|enjoy|enjoys|adore|adores)"
        rf"\s+(?P<v>{_PHRASE}){_END}"), "likes"),
    (_p(rf"{_S}\s+(?:(?:do|does)\s+not|don't|doesn't|no\s+longer|never)\s+(?:really\s+)?(?:like|love|enjoy|likes|"
        rf"loves|enjoys)\s+(?P<v>{_PHRASE}){_END}|{_S}{_ADV}\s+(?:really\s+)?(?:hate|hates|dislike|dislikes|detest|"
        rf"detests|can't\s+stand|cannot\s+stand)\s+(?P<v2>{_PHRASE}){_END}"), "dislikes"),
]

_CUT = re.compile(
    r"\s+(?:and|but|because|since|as|with|for|in|on|at|near|where|which|who|that|now|these days|nowadays|"
    r"anymore|though|although|when|while|from|so|too|also|lately|recently|currently|still|these|this|"
    r"every|each|a lot|very much|so much)\b.*$|[,;:(].*$",
    re.I,
)
_ARTICLES = re.compile(r"^(?:(?:a|an|the)\s+)+", re.I)
_CONTRACTIONS = [
    (re.compile(r"\b(?:I'm|im)\b", re.I), "I am"), (re.compile(r"\b(?:I've|ive)\b", re.I), "I have"),
    (re.compile(r"\bwe're\b", re.I), "we are"), (re.compile(r"\bwe've\b", re.I), "we have"),
    (re.compile(r"\b(name|age|job|occupation|profession)'s\b", re.I), r"\1 is"),
]


def _value(raw: str | None, *, cut: bool = True) -> str:
    v = (raw or "").strip()
    if cut:
        v = _CUT.sub("", v)
    v = _ARTICLES.sub("", v.strip()).strip(" .,!?'\"").lower()
    v = re.sub(r"'s$", "", v)
    return " ".join(v.split())


def _qualified(m: re.Match[str], table: dict[str, str]) -> str | None:
    """``name:dog``-style key suffix from the relation (+ qualifier); None when the qualifier means 'another'."""
    qual = (m.group("q") or "").lower()
    if qual in _SKIP_QUAL:
        return None
    rel = table[m.group("rel").lower()]
    qual = _QUAL_NORM.get(qual, "")
    return f"{qual} {rel}".strip()


def _pairs(kind: str, m: re.Match[str]) -> list[tuple[str, str]]:
    g = m.groupdict()
    if kind in ("residence", "name"):
        return [(kind, _value(g["v"], cut=False))]
    if kind == "rel-residence":
        rel = _qualified(m, _RELATIVES)
        return [] if rel is None else [(f"residence:{rel}", _value(g["v"], cut=False))]
    if kind == "rel-name":
        rel = _qualified(m, _NAMED_RELS)
        return [] if rel is None else [(f"name:{rel}", _value(g["v"], cut=False))]
    if kind in ("employer", "occupation"):
        return [(kind, _value(g["v"], cut=not g["v"][:1].isupper()))]
    if kind == "favourite":
        key = _value(g["k"]).replace("colour", "color")
        key = key[:-1] if key.endswith("s") and not key.endswith("ss") and len(key) > 3 else key
        return [(f"favourite:{key}", _value(g["v"]))] if key else []
    if kind == "age":
        value = g["v"] or g.get("v2")
        return [("age", str(int(value)))] if value and 0 < int(value) < 130 else []
    if kind == "relationship":
        if g.get("up") is not None:
            return [("relationship", "single")]
        if g.get("m"):
            return [("relationship", "married")]
        raw = _value(g["v"] or g.get("v2"), cut=False)
        if raw.startswith(("in a", "dating", "seeing")) or raw.endswith("relationship"):
            return [("relationship", "in a relationship")]
        return [("relationship", _STATUS.get(raw, raw))]
    if kind == "prefer":
        a, b = _value(g["a"] or g["a2"]), _value(g["b"] or g["b2"])
        if not a or not b or a == b:
            return []
        return [("prefer:" + "|".join(sorted((a, b))), a)]
    # likes / dislikes
    obj = re.sub(r"^to\s+", "", _value(g["v"] or g.get("v2")))
    if not obj or obj.split()[0] in _NOT_VALUE:
        return []
    return [(f"likes:{obj}", "yes" if kind == "likes" else "no")]


def attributes(text: str) -> dict[str, str]:
    """(attribute -> value) stated by ``text`` (first person or "The user ..."); later statements win."""
    out: dict[str, str] = {}
    for sentence in split_sentences(text):
        s = sentence
        for pattern, repl in _CONTRACTIONS:
            s = pattern.sub(repl, s)
        for pattern, kind in _PATTERNS:
            for m in pattern.finditer(s):
                for key, value in _pairs(kind, m):
                    if not value or value in _NOT_VALUE:
                        continue
                    if kind in _NAMELIKE and value.split()[0] in COMMON_START:
                        continue  # "This is my dog", "I live in The ..." -> not a name/place
                    out[key] = value
    return out


_NAMELIKE = {"residence", "rel-residence", "name", "rel-name", "employer", "favourite"}
_STOP_TOKENS = {"a", "an", "the", "of"}


def same_value(a: str, b: str) -> bool:
    """Same attribute value: equal word sets, or one's words all contained in the other's."""
    ta = set(re.findall(r"\w+", a.lower())) - _STOP_TOKENS
    tb = set(re.findall(r"\w+", b.lower())) - _STOP_TOKENS
    if not ta or not tb:
        return a.strip().lower() == b.strip().lower()
    return ta <= tb or tb <= ta


def conflicts(new: dict[str, str], old: dict[str, str]) -> list[str]:
    """Attributes both state with different values (new supersedes old when non-empty)."""
    return [k for k, v in new.items() if k in old and not same_value(v, old[k])]
