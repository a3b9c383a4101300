"""LoCoMo (snap-research/LoCoMo, ``data/locomo10.json``, CC BY-NC 4.0) as memchat import records and
questions, for `scripts/bench_locomo.py`. The data set is read from outside the repository
(``--data`` or ``MEMCHAT_LOCOMO_PATH``) and never committed, nor is anything derived from it. Either file the
repository has published is read: ``data/locomo10.json`` (a list of samples) or ``data/locomo10.zip`` (one
JSON file per conversation, ``.../<n>.json``, taken in the order of ``n``; the same conversations and questions).

One memory per dialogue turn: content ``<speaker> said, "<text>"`` (plus ``[shares <caption>]`` when the
turn carries an image caption), ``createdAt`` = the session's date and time plus the turn's index in
seconds (so turns keep their order, as per-message timestamps of a real chat log would),
``sourceThreadId`` = the session (``session_N``), ``sourceTurnId`` = the dia id, ``id`` = uuid5 of
(conversation, dia id).

Evidence ids are normalised: an entry may hold several ids separated by ``;``, ``,`` or spaces;
each id is matched with ``D<session>:<turn>`` after dropping stray colons inside (``D:11:26`` ->
``D11:26``); a third number (``D10:3:5``) is dropped; leading zeros do not matter. Ids that name no
turn of the conversation are dropped, and questions left without evidence are skipped (counted).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
NS_UUID = uuid.UUID("6f1c3c2e-8d7a-4a57-9a59-3f1f0b6c1e42")
_DIA = re.compile(r"D:?(\d+):(\d+)")


@dataclass
class Conversation:
    index: int
    sample_id: str
    records: list[dict] = field(default_factory=list)  # import records
    dia_of: dict[str, str] = field(default_factory=dict)  # memory id -> dia id
    questions: list[dict] = field(default_factory=list)  # {"question", "category", "evidence": set[dia]}
    skipped: int = 0


def parse_session_time(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> aware datetime (UTC)."""
    t = " ".join(text.replace(",", " ").split())
    for fmt in ("%I:%M %p on %d %B %Y", "%I:%M %p on %d %b %Y", "%H:%M on %d %B %Y"):
        try:
            return datetime.strptime(t, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"unparsed session date {text!r}")


def norm_dia(raw: str) -> list[str]:
    out = []
    for part in re.split(r"[;,\s]+", raw.strip()):
        m = _DIA.match(part)
        if m:
            out.append(f"D{int(m.group(1))}:{int(m.group(2))}")
    return out


def rfc3339(d: datetime) -> str:
    return d.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def turn_content(turn: dict) -> str:
    text = f'{turn["speaker"]} said, "{turn.get("text", "").strip()}"'
    if turn.get("blip_caption"):
        text += f' [shares {turn["blip_caption"].strip()}]'
    return text


def read_samples(path: str | Path) -> list[dict]:
    """The samples (``sample_id``, ``conversation``, ``qa``) of ``locomo10.json`` or of ``locomo10.zip``."""
    path = Path(path)
    if path.suffix != ".zip":
        return json.loads(path.read_text())
    import zipfile

    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r".*/\d+\.json", n)]
        samples = []
        for name in sorted(names, key=lambda n: int(n.rsplit("/", 1)[1][:-5])):
            raw = json.loads(archive.read(name))
            conv = {k: v for k, v in raw.items()
                    if k in ("speaker_a", "speaker_b") or re.fullmatch(r"session_\d+(_date_time)?", k)}
            samples.append({"sample_id": f"conv-{name.rsplit('/', 1)[1][:-5]}", "conversation": conv,
                            "qa": raw["qa"]})
    return samples


def load(path: str | Path, fmt: str = "threads") -> list[Conversation]:
    """``fmt``: "threads" (the default above) or "plain" -- the format the project's issue describes, as a
    client without thread ids would import: content ``(<session date>) <speaker> said, "<text>"``,
    ``createdAt`` = the session's date for every turn of it, no ``sourceThreadId``, source explicit."""
    data = read_samples(path)
    convs = []
    for ci, sample in enumerate(data):
        c = Conversation(index=ci, sample_id=str(sample.get("sample_id", ci)))
        conv = sample["conversation"]
        sessions = sorted(
            (int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k) and conv[k]),
        )
        known: set[str] = set()
        for sn in sessions:
            start = parse_session_time(conv[f"session_{sn}_date_time"])
            for ti, turn in enumerate(conv[f"session_{sn}"]):
                dias = norm_dia(turn["dia_id"])
                if not dias:
                    continue
                dia = dias[0]
                mid = str(uuid.uuid5(NS_UUID, f"{c.sample_id}/{dia}"))
                c.dia_of[mid] = dia
                known.add(dia)
                if fmt == "plain":
                    c.records.append({"id": mid, "createdAt": rfc3339(start),
                                      "content": f"({start:%d %B %Y}) {turn_content(turn)}"})
                else:
                    c.records.append({
                        "id": mid,
                        "content": turn_content(turn),
                        "createdAt": rfc3339(start + timedelta(seconds=ti)),
                        "source": "conversation",
                        "sourceThreadId": f"session_{sn}",
                        "sourceTurnId": dia,
                    })
        for qa in sample["qa"]:
            ev = {d for raw in qa.get("evidence", []) for d in norm_dia(raw)} & known
            if not ev:
                c.skipped += 1
                continue
            c.questions.append({"question": qa["question"], "category": int(qa["category"]), "evidence": ev})
        convs.append(c)
    return convs


@dataclass
class Session:
    number: int
    start: datetime
    lines: list[tuple[str, str, str]]  # (dia id, speaker, text as a chat client would send it)


def load_sessions(path: str | Path) -> list[tuple[list[str], list[Session]]]:
    """Per conversation: its two speakers and its sessions, for feeding through the chat API. A line's
    text is the turn's text plus ``[shares <caption>]`` when it carries an image (the caption standing in
    for the picture, as in `turn_content`)."""
    data = read_samples(path)
    out = []
    for sample in data:
        conv = sample["conversation"]
        speakers = [conv.get("speaker_a", "A"), conv.get("speaker_b", "B")]
        numbers = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k) and conv[k])
        sessions = []
        for sn in numbers:
            lines = []
            for turn in conv[f"session_{sn}"]:
                dias = norm_dia(turn["dia_id"])
                if not dias:
                    continue
                text = turn.get("text", "").strip()
                if turn.get("blip_caption"):
                    text += f' [shares {turn["blip_caption"].strip()}]'
                lines.append((dias[0], turn["speaker"], text))
            sessions.append(Session(sn, parse_session_time(conv[f"session_{sn}_date_time"]), lines))
        out.append((speakers, sessions))
    return out
