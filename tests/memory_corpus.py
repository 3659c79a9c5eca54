"""A long, deterministic conversation with facts planted in it, and questions that paraphrase them.

Shared by the memory tests and tests/bench/bench_memory.py. The filler talks
about everyday things far from the facts; each question asks for a fact in
other words (few or no words in common), so finding it takes meaning, not
word overlap.
"""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class Fact:
    statement: str
    question: str
    answer: str  # a piece of the statement that must reach the model


FACTS = (
    Fact("By the way, my sister's cat is called Biscuit.", "What name did my sibling give her pet?", "Biscuit"),
    Fact("I left the car on level four of the Sakura parking garage.", "Where did I put my vehicle?",
         "level four"),
    Fact("The wifi password at the cabin is tangerine42.", "What do I type to get online at the holiday house?",
         "tangerine42"),
    Fact("My dentist appointment is on the 14th of March.", "When do I have to get my teeth checked?",
         "14th of March"),
    Fact("Grandma was born in Sapporo in 1941.", "In which city did my grandmother come into the world?",
         "Sapporo"),
    Fact("Peanuts make my throat swell up, so I never eat them.", "Is there any food I must avoid for my health?",
         "Peanuts"),
    Fact("Our team has to hand in the project on Friday the 9th.", "By what date must the group deliver its work?",
         "Friday the 9th"),
    Fact("The band I love most is Blue Lantern.", "Which musicians are my favourite?", "Blue Lantern"),
    Fact("The spare house key is hidden under the green flowerpot.",
         "If I get locked out of my home, how do I get back in?", "green flowerpot"),
    Fact("My bicycle lock opens with the combination 7391.", "What is the code that secures my bike?", "7391"),
    Fact("My manager's name is Ms. Okonkwo.", "Who is my boss at work?", "Okonkwo"),
    Fact("I keep my passport in the blue folder in the desk drawer.",
         "Where are my travel documents stored?", "blue folder"),
)

_CITIES = ("Lisbon", "Oslo", "Hanoi", "Lima", "Perth", "Quito", "Tunis", "Riga", "Accra", "Bern")
_TOPICS = ("medieval architecture", "tidal energy", "sourdough starters", "chess openings", "jazz harmony",
           "volcanoes", "bird migration", "origami", "ancient Rome", "compost heaps", "knitting patterns",
           "desert plants", "lighthouses", "glaciers", "tea ceremonies", "board games")
_ADJECTIVES = ("grey", "windy", "bright", "humid", "chilly", "calm", "stormy", "mild")
_USER = (
    "The weather in {city} was {adj} today, so I stayed in and read about {topic}.",
    "I watched a long documentary about {topic} last night. It was slower than I expected.",
    "A friend from {city} sent me a postcard with a picture of {topic}.",
    "I have been thinking about {topic} again. There is always more to learn. Do you know much about it?",
    "Yesterday the train to {city} was late, and the carriage was full of people talking about {topic}.",
    "I tried to explain {topic} to my neighbour. He nodded politely and changed the subject to the {adj} weather.",
)
_ASSISTANT = (
    "That sounds interesting. {topic} has a long history, and many people find it relaxing to learn about.",
    "A {adj} day is a good excuse to read. What part of {topic} did you enjoy the most?",
    "It is nice to hear from friends abroad. {city} must be lovely at this time of year.",
    "Learning a little every day adds up. Maybe next time you could look into {topic} as well.",
)


def conversation(turn_pairs: int, facts: tuple[Fact, ...] = FACTS, seed: int = 7) -> list[dict[str, str]]:
    """TURN_PAIRS user/assistant pairs; the facts are stated by the user, spread over the first 80 %."""
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(1, max(2, int(turn_pairs * 0.8))), len(facts)))
    planted = dict(zip(slots, facts))
    messages = []
    for pair in range(turn_pairs):
        fill = {"city": rng.choice(_CITIES), "topic": rng.choice(_TOPICS), "adj": rng.choice(_ADJECTIVES)}
        user = rng.choice(_USER).format(**fill)
        if pair in planted:
            user = f"{user} {planted[pair].statement}"
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": rng.choice(_ASSISTANT).format(**fill)})
    return messages
