#!/usr/bin/env python3
"""Generate a synthetic long-term-memory retrieval set (deterministic, seeded, no downloads).

Each user (= one memchat namespace) has many dated chat sessions. Every *user turn* is one
memory, as memchat stores it. A user's turns mix:

* facts about the user -- pets, job, city, family, hobbies, food/music preferences, car,
  trips (stored on the session date, the date itself mostly *not* in the text);
* later updates that contradict earlier facts (moved city, changed job, new car, ...);
* hard distractors: the same kinds of facts about *other* people (coworkers, friends,
  neighbours), plans that did not happen, near-miss places;
* lots of chit-chat and requests on unrelated topics.

Questions are written from separate templates (paraphrases: "what's my dog called?" for
"we brought home a beagle puppy ... named Biscuit"), each with the ids of the memories
that answer it. Question types: single fact, current-after-update (evidence = the newest
fact), previous value (the older fact), multi-evidence (all pets, all cities), and temporal
("where did I travel in May 2023?", answerable only from the memory's date).

Held-out split: ``--split tune`` and ``--split test`` use different seeds *and* disjoint
halves of every phrasing template list (both evidence and question templates), so tuning on
one and reporting on the other also guards against overfitting to the phrasings.

Output: one JSON file {"memories": [...], "questions": [...], "meta": {...}}.

    python scripts/gen_retrieval_set.py --split test --users 40 --out /tmp/memchat-retrieval/test.json
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

# ----------------------------------------------------------------------------- vocabularies

FIRST_NAMES = """Aarav Abigail Adele Ahmed Aiko Alba Alejandro Amara Anders Anika Arjun Astrid Beatriz Benedict
Bianca Bilal Bruno Camila Carmen Cedric Chiara Chloe Dara Dmitri Elena Elif Emeka Esme Fatima Felix Freya Gabriel
Greta Hana Hassan Helga Hiro Ingrid Isaac Ivan Jana Javier Jonas Kai Kalani Kavya Keanu Lars Layla Leon Lucia Luka
Malik Mara Mateo Maya Milan Mina Nadia Niamh Nico Nora Olga Omar Oskar Paloma Pedro Priya Quentin Rafael Rania
Ravi Rosa Ruben Saanvi Sana Selma Soren Stella Tariq Thea Tomas Uma Valentina Viktor Wanda Yara Yusuf Zara Zoltan""".split()

PET_NAMES = """Biscuit Pixel Mochi Juniper Pepper Waffles Ziggy Nugget Clementine Bao Marble Sprocket Tofu
Pickles Hazel Rocket Olive Noodle Pumpkin Sable Fig Miso Turbo Cinnamon Bramble Dumpling Kiwi Socks Truffle""".split()

# (kind word used in questions, specific words used in evidence)
PET_KINDS = [
    ("dog", ["beagle puppy", "golden retriever", "border collie", "rescue greyhound", "dachshund", "corgi"]),
    ("cat", ["tabby kitten", "Maine Coon", "Siamese", "black kitten", "ginger tomcat"]),
    ("bird", ["cockatiel", "budgie", "African grey parrot"]),
    ("rabbit", ["lop-eared bunny", "dwarf bunny"]),
    ("fish", ["betta", "pair of goldfish"]),
]

JOBS = [
    ("nurse", "pediatric nurse"), ("teacher", "high-school chemistry teacher"), ("engineer", "backend developer"),
    ("designer", "UX designer"), ("accountant", "tax accountant"), ("chef", "sous-chef"), ("lawyer", "paralegal"),
    ("pharmacist", "pharmacist"), ("architect", "junior architect"), ("vet", "veterinary technician"),
    ("journalist", "copy editor"), ("scientist", "lab researcher"), ("pilot", "first officer"),
    ("librarian", "archivist"), ("electrician", "apprentice electrician"), ("therapist", "physiotherapist"),
]
COMPANIES = """Northwind Bluepeak Larkspur Halcyon Meridian Quillfeather Brightforge Tidewater Copperleaf Stonebridge
Foxglove Silverline Redwood Ashgrove Kestrel Evergreen Lumina Orchard Harborview Pinecrest""".split()
COMPANY_SUFFIX = ["Labs", "Health", "Systems", "Studio", "& Co", "Group", "Clinic", "Logistics", "Media", "Academy"]

CITIES = """Lisbon Porto Valencia Lyon Utrecht Leipzig Krakow Gothenburg Tallinn Ljubljana Bologna Galway Edinburgh
Bristol Montreal Halifax Portland Denver Austin Savannah Boulder Madison Tucson Wellington Hobart Adelaide Kyoto Busan
Taipei Penang""".split()

TRIPS = [
    ("Reykjavik", "the Blue Lagoon"), ("Marrakech", "the souks"), ("Hanoi", "Ha Long Bay"), ("Cusco", "Machu Picchu"),
    ("Cape Town", "Table Mountain"), ("Istanbul", "the Grand Bazaar"), ("Santorini", "the sunsets in Oia"),
    ("Banff", "Lake Louise"), ("Oaxaca", "the mezcal tastings"), ("Tbilisi", "the sulphur baths"),
    ("Seville", "the Alcazar"), ("Queenstown", "the bungee jump"), ("Dubrovnik", "the old city walls"),
    ("Nairobi", "the safari"), ("Hokkaido", "the snow festival"), ("Havana", "the vintage cars"),
    ("Vienna", "the opera"), ("Bali", "the rice terraces"), ("Patagonia", "the glaciers"), ("Lofoten", "the northern lights"),
]

HOBBIES = [
    ("pottery", "wheel-throwing class", "made a wonky bowl"), ("rock climbing", "bouldering gym", "finally sent a V4"),
    ("salsa dancing", "salsa lessons", "didn't step on anyone's feet"), ("watercolor painting", "watercolor workshop", "painted the harbor"),
    ("sourdough baking", "starter I named Doughbi", "got a great oven spring"), ("chess", "chess club", "won three games"),
    ("birdwatching", "birding group", "spotted a kingfisher"), ("woodworking", "woodshop evening course", "built a small stool"),
    ("trail running", "trail running club", "ran 15k through the hills"), ("the ukulele", "ukulele lessons", "learned four chords"),
    ("knitting", "knitting circle", "finished my first scarf"), ("photography", "film photography course", "developed my first roll"),
    ("kayaking", "sea kayaking course", "paddled out to the island"), ("Japanese", "Japanese evening classes", "read a whole menu"),
]

CUISINES = ["Ethiopian food", "Thai curries", "Neapolitan pizza", "ramen", "Lebanese mezze", "Peruvian ceviche", "dim sum", "Georgian khachapuri"]
DISLIKES = ["olives", "cilantro", "mushrooms", "blue cheese", "licorice", "oysters", "eggplant", "anchovies"]
MUSIC = ["jazz piano", "80s synth-pop", "bluegrass", "K-pop", "old soul records", "Afrobeat", "baroque music", "shoegaze"]
CARS = ["Honda Civic", "Subaru Outback", "Toyota Prius", "Volvo station wagon", "Mini Cooper", "Ford pickup", "Nissan Leaf", "Mazda Miata"]
RELATIONS = [("sister", "sibling"), ("brother", "sibling"), ("mom", "mother"), ("dad", "father"), ("cousin", "cousin"),
             ("best friend", "closest friend"), ("grandmother", "grandma")]
OTHERS = ["coworker", "neighbor", "roommate", "friend from college", "boss", "colleague", "gym buddy", "brother-in-law"]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]

# ----------------------------------------------------------------------------- templates
# Evidence templates: lists, split by parity between the tune and test splits.

EV = {
    "pet": [
        "We finally brought home a {spec}! The kids voted and the name is {pet}.",
        "Adopted a {spec} from the shelter on Saturday. We're calling them {pet}.",
        "Meet {pet}, our new {spec}. Already chewed one of my shoes, lol.",
        "So I caved and got a {spec}. {pet} is asleep on my lap right now.",
    ],
    "job": [
        "Today was my first day as a {title} at {company}. Everyone seemed really nice.",
        "I accepted the offer from {company}! I'll be working as a {title} starting Monday.",
        "Signed the contract with {company} today, officially a {title} now.",
        "Big news: {company} hired me as their new {title}.",
    ],
    "job_change": [
        "I handed in my notice at {old}. Starting at {company} as a {title} next month.",
        "Left {old} after all that drama; {company} brought me on as a {title}.",
        "Last day at {old} was Friday. Monday I start at {company}, {title} role.",
        "Decided to leave {old} -- took a {title} position at {company} instead.",
    ],
    "city": [
        "We signed the lease on an apartment in {city}. Moving boxes everywhere.",
        "Finally settled into our new place in {city}, the neighborhood is lovely.",
        "Just unpacked the last box here in {city}. It already feels like home.",
        "Our offer on the flat in {city} was accepted!",
    ],
    "city_change": [
        "Big change: we're leaving {old} and relocating to {city} at the end of the month.",
        "The movers come Tuesday -- goodbye {old}, hello {city}.",
        "We sold the {old} place. New address is in {city} from next week.",
        "Packing up everything in {old}; the new apartment in {city} is ready.",
    ],
    "family": [
        "My {rel} {person} just started working as a {job} in {city}.",
        "Had dinner with my {rel} {person}, who's now a {job} over in {city}.",
        "Called my {rel} {person} today -- still loving the {job} gig in {city}.",
        "My {rel} {person} got a job as a {job}, so they're moving to {city}.",
    ],
    "hobby": [
        "I signed up for a {place} and {detail} at the first session!",
        "Been getting really into {hobby} lately -- the {place} is the highlight of my week.",
        "Tried {hobby} for the first time at a {place}. I {detail}.",
        "New obsession: {hobby}. Joined a {place} and already {detail}.",
    ],
    "food_like": [
        "Honestly {food} is the best thing ever, I could eat it every single day.",
        "Nothing beats {food}. We ordered it again tonight.",
        "If I could only eat one thing forever it'd be {food}.",
        "Found an amazing spot for {food} downtown, I'm going to be a regular.",
    ],
    "food_dislike": [
        "Please never put {food} on my pizza, I genuinely can't stand it.",
        "I picked every bit of {food} out of the salad. Just can't do it.",
        "Fun fact: {food} makes me gag. Always have.",
        "Why does every recipe need {food}? I hate the stuff.",
    ],
    "music": [
        "Been listening to {music} nonstop while I work.",
        "Went to a {music} gig last night and it was magical.",
        "My playlist is basically 100% {music} at this point.",
        "Nothing relaxes me like some {music} on a Sunday morning.",
    ],
    "car": [
        "Picked up my {car} from the dealership today!",
        "Traded in the old clunker, now driving a {car}.",
        "The {car} I bought is so much better on gas.",
        "Finally got my own wheels -- a used {car}.",
    ],
    "car_change": [
        "Sold the {old} and bought a {car} instead.",
        "Goodbye {old}, hello {car}. Keys in hand!",
        "The {old} died for good, so I got a {car}.",
        "Upgraded from the {old} to a {car} this weekend.",
    ],
    "trip": [
        "Just got back from {days} days in {place}. {sight} was incredible.",
        "Home from {place}! {sight} was the highlight of the whole trip.",
        "Still jet-lagged after {place}, but {sight} made it worth it.",
        "Back at my desk after a week in {place}. Can't stop thinking about {sight}.",
    ],
}

OTHER_FACTS = [
    "My {other} {person} just adopted a {spec} called {pet}.",
    "My {other} {person} is moving to {city} for a new job.",
    "{person}, my {other}, started as a {title} at {company}.",
    "My {other} {person} keeps raving about {place}, went there last month.",
    "My {other} {person} bought a {car} and won't stop talking about it.",
    "My {other} {person} has been doing {hobby} every weekend.",
    "My {other} {person} is obsessed with {food}.",
    "We might visit {place} someday, but honestly it's not in the budget.",
    "I was offered a job at {company} but turned it down.",
    "Thought about moving to {city} but decided against it.",
]

CHITCHAT = [
    "Ugh, Mondays. Anyway, how are you?", "Thanks, that was really helpful!", "lol fair enough",
    "I'm so tired today, barely slept.", "Can you help me write an email to my landlord about the heating?",
    "What's a good recipe with chickpeas and spinach?", "How do I center a div in CSS?",
    "Remind me how compound interest works?", "What's the capital of Australia again?",
    "Can you summarize the plot of Hamlet in two sentences?", "Give me a quick stretching routine for my back.",
    "Is it going to be weird if I wear sneakers to a wedding?", "Okay that makes sense.",
    "What's the difference between a latte and a flat white?", "Any tips for falling asleep faster?",
    "Write me a haiku about rain.", "How long should I boil an egg for a runny yolk?",
    "Can you explain what an API is like I'm five?", "Haha, good one.", "Hmm, let me think about that.",
    "What's a polite way to decline a meeting invite?", "Why is the sky blue?",
    "How many cups are in a liter?", "Suggest a name for a book club.", "Traffic was terrible this morning.",
    "My laptop keeps freezing, any ideas?", "Can you proofread this sentence for me: their going to the store.",
    "What should I cook for a dinner party of six?", "Tell me a fun fact about octopuses.",
    "How do I get red wine out of a carpet?", "I have a headache, probably too much screen time.",
    "What's a good stretch for tight hamstrings?", "Is it better to rent or buy in general?",
    "Help me plan a budget for next month.", "What does 'ubiquitous' mean?", "Rainy day again, of course.",
    "Could you recommend a podcast about history?", "How do I convert Celsius to Fahrenheit?",
    "The meeting ran over by an hour again.", "Give me three ideas for a quick lunch.",
    "What's a good way to start journaling?", "Ok thanks, talk later!", "Good morning!",
    "Explain the offside rule in soccer.", "What year did the Berlin Wall fall?",
    "Can you make this paragraph sound more professional?", "Feeling pretty unmotivated this week.",
    "What are some good houseplants for low light?", "How do vaccines work, briefly?",
]

# Question templates: list per type; split by parity like the evidence ones.
Q = {
    "pet_name": [
        "What's my {kind} called?", "What name did we give our {kind}?", "Remind me of my {kind}'s name?",
        "What did I name the {kind} I adopted?",
    ],
    "pet_kind": [
        "What kind of animal is {pet}?", "What sort of pet did I get?", "Which breed is my pet?",
        "What type of pet do I own?",
    ],
    "pets_all": [
        "Which animals live with me?", "List all the pets I have.", "What pets do I currently have at home?",
        "How many pets do I have and what are they?",
    ],
    "job_now": [
        "Where do I work now?", "What's my current employer?", "Which company am I employed by at the moment?",
        "Who am I working for these days?",
    ],
    "job_title_now": [
        "What do I do for a living?", "What's my current role?", "What is my profession right now?",
        "What position do I hold at work?",
    ],
    "job_before": [
        "Where was I working before I switched jobs?", "What was my previous employer?",
        "Which company did I leave?", "Where did I work before my current job?",
    ],
    "city_now": [
        "Which city do I live in currently?", "Where is home for me these days?", "What town am I based in now?",
        "Where did I most recently move to?",
    ],
    "city_before": [
        "Where did I live before the move?", "Which city did I move away from?",
        "What was my previous city?", "Where was my old apartment?",
    ],
    "cities_all": [
        "Which cities have I lived in?", "List the places I've called home.", "Name every city I've lived in.",
        "What cities have I had an apartment in?",
    ],
    "family_job": [
        "What does my {rel2} do for work?", "What's {person}'s occupation?", "What job does my {rel2} have?",
        "What is {person} working as?",
    ],
    "family_city": [
        "Where does my {rel2} live?", "Which city is {person} in?", "Where is my {rel2} based?",
        "What city did {person} end up in?",
    ],
    "hobby": [
        "What new activity have I taken up?", "What am I doing in my free time lately?",
        "Which class did I enroll in?", "What pastime did I get into?",
    ],
    "food_like": [
        "What's my favorite thing to eat?", "Which cuisine do I love most?", "What food could I eat every day?",
        "What dish do I like best?",
    ],
    "food_dislike": [
        "Is there an ingredient I hate?", "Which food can't I stand?", "What should you never serve me?",
        "What do I refuse to eat?",
    ],
    "music": [
        "What music do I listen to?", "Which genre am I into?", "What kind of songs do I enjoy?",
        "What's on my playlist?",
    ],
    "car_now": [
        "What car do I drive now?", "Which vehicle do I currently own?", "What's my current ride?",
        "What am I driving these days?",
    ],
    "car_before": [
        "What car did I have before?", "Which vehicle did I get rid of?", "What was my old car?",
        "What did I drive previously?",
    ],
    "trip_where": [
        "Where did I travel in {month} {year}?", "Which place did I visit in {month} {year}?",
        "Where was I on vacation in {month} {year}?", "What trip did I take in {month} {year}?",
    ],
    "trip_when": [
        "When did I visit {place}?", "When was I in {place}?", "When did I get back from {place}?",
        "What month did I go to {place}?",
    ],
    # Anchored questions: they name the entity, as people often do ("when did we get Biscuit?").
    "pet_when": [
        "When did we get {pet}?", "How long ago did {pet} join the family?", "When did I adopt {pet}?",
        "When did {pet} come home with us?",
    ],
    "job_at": [
        "What's my role at {company}?", "What was I hired to do at {company}?", "What position did I take at {company}?",
        "What do I do at {company}?",
    ],
    "city_when": [
        "When did I move to {city}?", "When did we get the place in {city}?", "When did I start living in {city}?",
        "How long have I been in {city}?",
    ],
    "hobby_how": [
        "How is my {hobby} going?", "What did I manage in {hobby} so far?", "Any progress with {hobby}?",
        "What happened when I tried {hobby}?",
    ],
    "car_when": [
        "When did I get the {car}?", "How long have I had my {car}?", "When did I buy the {car}?",
        "When did the {car} become mine?",
    ],
    "trip_sight": [
        "What did I love most about {place}?", "What was the highlight of my {place} trip?",
        "What stood out during my trip to {place}?", "What did I enjoy on the {place} vacation?",
    ],
}


def half(items: list, split: str) -> list:
    """Disjoint template halves: tune gets even indices, test odd ones."""
    return items[0::2] if split == "tune" else items[1::2]


class UserGen:
    def __init__(self, rng: random.Random, split: str, uid: int, start: datetime) -> None:
        self.rng = rng
        self.split = split
        self.ns = f"user-{split}-{uid:03d}"
        self.start = start
        self.memories: list[dict] = []
        self.questions: list[dict] = []
        self._uid_seed = f"{split}-{uid}"
        self._n = 0

    def ev(self, ekind: str, **kw) -> str:
        return self.rng.choice(half(EV[ekind], self.split)).format(**kw)

    def q(self, qkind: str, evidence: list[str], qtype: str, **kw) -> None:
        text = self.rng.choice(half(Q[qkind], self.split)).format(**kw)
        self.questions.append({"namespace": self.ns, "question": text, "evidence": evidence, "type": qtype, "kind": qkind})

    def mid(self) -> str:
        self._n += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"memchat-retrieval/{self._uid_seed}/{self._n}"))

    def build(self, sessions: int, turns: tuple[int, int]) -> None:
        rng = self.rng
        # Session dates: spread over ~20 months, sorted.
        days = sorted(rng.sample(range(600), sessions))
        dates = [self.start + timedelta(days=d, hours=rng.randint(7, 22), minutes=rng.randint(0, 59)) for d in days]
        slots: list[list[tuple[str, dict]]] = [[] for _ in range(sessions)]  # facts per session

        def put(session: int, text: str, key: str | None = None) -> dict:
            rec = {"text": text, "key": key}
            slots[session].append(("fact", rec))
            return rec

        used_names = set()

        def person() -> str:
            while True:
                n = rng.choice(FIRST_NAMES)
                if n not in used_names:
                    used_names.add(n)
                    return n

        pending_q: list[tuple] = []  # (kind, [recs], qtype, kwargs)

        # pets: 1-2
        pets = []
        pet_kinds = rng.sample(PET_KINDS, 2)  # distinct kinds, so "my dog" is unambiguous
        for i, s in enumerate(sorted(rng.sample(range(sessions), rng.choice([1, 2])))):
            kind, specs = pet_kinds[i]
            spec = rng.choice(specs)
            name = rng.choice([p for p in PET_NAMES if p not in {x[2] for x in pets}])
            rec = put(s, self.ev("pet", spec=spec, pet=name))
            pets.append((kind, spec, name, rec))
            pending_q.append(("pet_name", [rec], "single", {"kind": kind}))
            pending_q.append(("pet_when", [rec], "anchored", {"pet": name}))
            pending_q.append(("pet_kind", [rec], "single", {"pet": name}))
        if len(pets) > 1:
            pending_q.append(("pets_all", [p[3] for p in pets], "multi", {}))

        # job + change
        s1, s2 = sorted(rng.sample(range(sessions), 2))
        (_, t1), (_, t2) = rng.sample(JOBS, 2)
        c1, c2 = (f"{a} {rng.choice(COMPANY_SUFFIX)}" for a in rng.sample(COMPANIES, 2))
        j1 = put(s1, self.ev("job", title=t1, company=c1))
        if rng.random() < 0.7:
            j2 = put(s2, self.ev("job_change", old=c1, company=c2, title=t2))
            pending_q.append(("job_now", [j2], "update", {}))
            pending_q.append(("job_title_now", [j2], "update", {}))
            pending_q.append(("job_before", [j1], "previous", {}))
            pending_q.append(("job_at", [j2], "anchored", {"company": c2}))
        else:
            pending_q.append(("job_now", [j1], "single", {}))
            pending_q.append(("job_title_now", [j1], "single", {}))

        # city + change
        s1, s2 = sorted(rng.sample(range(sessions), 2))
        ct1, ct2 = rng.sample(CITIES, 2)
        h1 = put(s1, self.ev("city", city=ct1))
        pending_q.append(("city_when", [h1], "anchored", {"city": ct1}))
        if rng.random() < 0.6:
            h2 = put(s2, self.ev("city_change", old=ct1, city=ct2))
            pending_q.append(("city_now", [h2], "update", {}))
            pending_q.append(("city_before", [h1], "previous", {}))
            pending_q.append(("cities_all", [h1, h2], "multi", {}))
        else:
            pending_q.append(("city_now", [h1], "single", {}))

        # family: 2
        rels = rng.sample(RELATIONS, 2)
        while rels[0][1] == rels[1][1]:
            rels = rng.sample(RELATIONS, 2)
        for rel, rel2 in rels:
            p = person()
            job = rng.choice(JOBS)[1]
            city = rng.choice(CITIES)
            rec = put(rng.randrange(sessions), self.ev("family", rel=rel, person=p, job=job, city=city))
            pending_q.append((rng.choice(["family_job", "family_city"]), [rec], "single", {"rel2": rel2, "person": p}))

        # hobby, food, music
        hobby, place, detail = rng.choice(HOBBIES)
        rec = put(rng.randrange(sessions), self.ev("hobby", hobby=hobby, place=place, detail=detail))
        pending_q.append(("hobby", [rec], "single", {}))
        pending_q.append(("hobby_how", [rec], "anchored", {"hobby": hobby}))
        rec = put(rng.randrange(sessions), self.ev("food_like", food=rng.choice(CUISINES)))
        pending_q.append(("food_like", [rec], "single", {}))
        rec = put(rng.randrange(sessions), self.ev("food_dislike", food=rng.choice(DISLIKES)))
        pending_q.append(("food_dislike", [rec], "single", {}))
        rec = put(rng.randrange(sessions), self.ev("music", music=rng.choice(MUSIC)))
        pending_q.append(("music", [rec], "single", {}))

        # car (+ change)
        if rng.random() < 0.7:
            s1, s2 = sorted(rng.sample(range(sessions), 2))
            car1, car2 = rng.sample(CARS, 2)
            r1 = put(s1, self.ev("car", car=car1))
            pending_q.append(("car_when", [r1], "anchored", {"car": car1}))
            if rng.random() < 0.6:
                r2 = put(s2, self.ev("car_change", old=car1, car=car2))
                pending_q.append(("car_now", [r2], "update", {}))
                pending_q.append(("car_before", [r1], "previous", {}))
            else:
                pending_q.append(("car_now", [r1], "single", {}))

        # trips: 2-4 in distinct months
        trip_sessions = []
        for s in rng.sample(range(sessions), min(sessions, rng.randint(2, 4))):
            ym = (dates[s].year, dates[s].month)
            if ym in {(dates[x].year, dates[x].month) for x in trip_sessions}:
                continue
            trip_sessions.append(s)
        for s, (place, sight) in zip(trip_sessions, rng.sample(TRIPS, len(trip_sessions))):
            rec = put(s, self.ev("trip", place=place, sight=sight[0].upper() + sight[1:], days=rng.randint(3, 12)))
            d = dates[s]
            pending_q.append(("trip_where", [rec], "temporal", {"month": MONTHS[d.month - 1], "year": d.year}))
            pending_q.append((rng.choice(["trip_when", "trip_sight"]), [rec], "anchored", {"place": place}))

        # distractor facts about others / near misses
        for _ in range(rng.randint(10, 16)):
            kind, specs = rng.choice(PET_KINDS)
            tpl = rng.choice(OTHER_FACTS)
            text = tpl.format(
                other=rng.choice(OTHERS), person=person() if len(used_names) < len(FIRST_NAMES) - 2 else "Sam",
                spec=rng.choice(specs), pet=rng.choice(PET_NAMES), city=rng.choice(CITIES), title=rng.choice(JOBS)[1],
                company=f"{rng.choice(COMPANIES)} {rng.choice(COMPANY_SUFFIX)}", place=rng.choice(TRIPS)[0],
                car=rng.choice(CARS), hobby=rng.choice(HOBBIES)[0], food=rng.choice(CUISINES),
            )
            slots[rng.randrange(sessions)].append(("other", {"text": text, "key": None}))

        # Assemble sessions: facts + chit-chat, in random order within a session.
        for s in range(sessions):
            n_chat = rng.randint(*turns)
            items = slots[s] + [("chat", {"text": rng.choice(CHITCHAT), "key": None}) for _ in range(n_chat)]
            rng.shuffle(items)
            t = dates[s]
            thread = f"{self.ns}/session-{s:02d}"
            for i, (_kind, rec) in enumerate(items):
                t = t + timedelta(seconds=rng.randint(20, 240))
                rec["id"] = self.mid()
                self.memories.append(
                    {
                        "id": rec["id"],
                        "namespace": self.ns,
                        "content": rec["text"],
                        "created_at": t.isoformat(),
                        "source_thread_id": thread,
                        "source_turn_id": f"{thread}/turn-{i:03d}",
                    }
                )
        for kind, recs, qtype, kw in pending_q:
            self.q(kind, [r["id"] for r in recs], qtype, **kw)


def generate(split: str, users: int, sessions: int, turns: tuple[int, int], seed: int | None = None) -> dict:
    if split not in ("tune", "test"):
        raise SystemExit("--split must be tune or test")
    seed = seed if seed is not None else {"tune": 1, "test": 2}[split]
    rng = random.Random(seed)
    memories: list[dict] = []
    questions: list[dict] = []
    for u in range(users):
        start = datetime(2022, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 400))
        g = UserGen(rng, split, u, start)
        g.build(sessions=rng.randint(*sessions_range(sessions)), turns=turns)
        memories += g.memories
        questions += g.questions
    for i, q in enumerate(questions):
        q["qid"] = f"{split}-q{i:04d}"
    return {
        "meta": {"split": split, "seed": seed, "users": users, "memories": len(memories), "questions": len(questions),
                 "generator": "scripts/gen_retrieval_set.py v2"},
        "memories": memories,
        "questions": questions,
    }


def sessions_range(n: int) -> tuple[int, int]:
    return max(4, n - 4), n + 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["tune", "test"], default="test")
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--sessions", type=int, default=16, help="mean sessions per user (+-4)")
    ap.add_argument("--turns-min", type=int, default=8, help="chit-chat turns per session, min")
    ap.add_argument("--turns-max", type=int, default=18, help="chit-chat turns per session, max")
    ap.add_argument("--seed", type=int, default=None, help="override the split's seed")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    data = generate(a.split, a.users, a.sessions, (a.turns_min, a.turns_max), a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(data))
    m = data["meta"]
    print(f"wrote {a.out}: {m['memories']} memories, {m['questions']} questions, {m['users']} users (seed {m['seed']})")


if __name__ == "__main__":
    main()
