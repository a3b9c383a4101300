"""Synthetic memories and user questions for the load benchmarks (``bench_proxy.py``, ``soak.py``): varied
enough that no cache sees the same text twice, and the same on every run (fixed random generators)."""

from __future__ import annotations

import random

NAMES = ["Ana", "Bruno", "Chen", "Dara", "Elif", "Femi", "Gita", "Hugo", "Ines", "Jonas", "Kofi", "Lena",
         "Marta", "Nico", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomas", "Uma", "Vera", "Wen", "Yusuf"]
RELATIONS = ["sister", "brother", "mother", "father", "daughter", "son", "wife", "husband", "best friend",
             "colleague", "neighbour", "manager", "cousin", "grandmother", "flatmate"]
CITIES = ["Lisbon", "Porto", "Berlin", "Osaka", "Lagos", "Lima", "Oslo", "Austin", "Krakow", "Hanoi", "Quito",
          "Nairobi", "Dublin", "Seville", "Tbilisi", "Montreal", "Perth", "Valencia", "Bergen", "Cusco"]
FOODS = ["ramen", "paella", "falafel", "pho", "tacos", "risotto", "jollof rice", "pierogi", "dumplings",
         "shakshuka", "ceviche", "moussaka", "bibimbap", "lasagne", "biryani", "goulash", "sushi", "pad thai"]
HOBBIES = ["bouldering", "sourdough baking", "chess", "trail running", "watercolour painting", "birdwatching",
           "salsa dancing", "woodworking", "astronomy", "kayaking", "knitting", "jazz piano", "photography"]
JOBS = ["nurse", "data engineer", "teacher", "architect", "carpenter", "pilot", "lawyer", "chef", "translator",
        "physiotherapist", "accountant", "game designer", "marine biologist", "electrician"]
PETS = ["dog", "cat", "parrot", "rabbit", "tortoise", "hamster", "ferret", "goldfish"]
TEMPLATES = [
    "The user's {rel} {name} lives in {city} and works as a {job}.",
    "The user is allergic to {food} since a trip to {city}.",
    "The user has a {pet} called {name} who loves {food}.",
    "The user took up {hobby} with their {rel} {name}.",
    "The user wants to visit {city} next year to try the {food}.",
    "The user's favourite weekend activity is {hobby} near {city}.",
    "The user's {rel} is a {job} and is learning {hobby}.",
    "The user cooked {food} for their {rel} {name}'s birthday.",
    "The user works as a {job} and commutes to {city} twice a week.",
    "The user adopted a {pet} from a shelter in {city}.",
]
QUESTIONS = [
    "Can you suggest a {food} recipe for my {rel} {name}?",
    "What should I pack for a {hobby} weekend in {city}?",
    "My {pet} seems bored, any ideas? We live near {city}.",
    "Write a short birthday message for my {rel} who is a {job}.",
    "How do I get better at {hobby} without spending much?",
    "Plan a rainy day in {city} for me and {name}.",
    "What goes well with {food} for a dinner with my {rel}?",
    "Any tips for a {job} starting out in {city}?",
]


def fill_template(template: str, rng: random.Random) -> str:
    return template.format(name=rng.choice(NAMES), rel=rng.choice(RELATIONS), city=rng.choice(CITIES),
                           food=rng.choice(FOODS), hobby=rng.choice(HOBBIES), job=rng.choice(JOBS),
                           pet=rng.choice(PETS))


def memory_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        text = fill_template(rng.choice(TEMPLATES), rng)
        if text in seen:
            text = f"{text[:-1]} (noted {len(out) % 28 + 1} {rng.choice(['March', 'June', 'October'])})."
            if text in seen:
                continue
        seen.add(text)
        out.append(text)
    return out


class Questions:
    """Distinct user messages: real users rarely repeat themselves, and a repeat would hit caches."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"{fill_template(self.rng.choice(QUESTIONS), self.rng)} ({self.n})"
