"""A small extractive reading-comprehension set the project makes itself (SQuAD's task in
miniature, Rajpurkar et al., EMNLP 2016): passages of templated facts about made-up people,
cities, clubs and teams, a question about one fact, and the answer as a span of passage tokens.
The data of AddSent (`robustlab.attacks.reading`), offline and seeded.

A passage states 2-4 facts of different kinds (a club's founder and year, a person's birthplace,
a city's flag colour, a team's titles, a building's year, a team's coach), in random order, and
sometimes one off-topic filler sentence ("the weather in oslo was mild ."). Since a passage
never states two facts of one kind, as a SQuAD paragraph rarely does, the question's wording
alone says which sentence holds the answer: a model can score well without ever checking that
the sentence is about the question's entity. AddSent's distracting sentence is the test of
whether it does.

Text is lower case with the full stop and question mark as tokens of their own, so that
`str.split` is the tokenisation and a span (start, end) counts words, end inclusive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._checks import check_choice, check_positive, check_seed
from .text_data import WordTokenizer

__all__ = ["ENTITIES", "FACTS", "FILLERS", "QAExample", "filler_sentence", "qa_set",
           "reading_tokenizer", "reading_words"]

# the pools each slot of a template draws from; a person is "{first} {last}"
ENTITIES = {
    "first": ("ana", "ben", "carla", "dev", "elena", "farid", "greta", "hugo", "ines", "jonas",
              "kira", "luis", "mira", "nils", "olga", "pavel", "rosa", "sven", "tara", "yusuf"),
    "last": ("weber", "silva", "novak", "berg", "costa", "meyer", "larsen", "rossi", "kovacs",
             "moreau", "jansen", "dubois", "ortiz", "lindqvist", "haddad", "petrov", "okafor",
             "tanaka", "walsh", "fischer"),
    "city": ("lisbon", "oslo", "porto", "vienna", "krakow", "dublin", "lyon", "turin", "ghent",
             "bergen", "malmo", "riga", "tallinn", "seville", "bremen", "leeds", "nantes", "basel",
             "zagreb", "utrecht"),
    "sport": ("rowing", "chess", "cycling", "tennis", "rugby", "hockey", "sailing", "fencing"),
    "building": ("bridge", "museum", "library", "tower", "theatre", "station"),
    "colour": ("red", "blue", "green", "yellow", "white", "black", "orange", "purple"),
    "year": tuple(str(y) for y in range(1850, 2000)),
    "number": tuple(str(k) for k in range(2, 40)),
}

# kind -> (statement, ((question, the slot that answers it), ...))
FACTS = {
    "founded": ("{person} founded the {city} {sport} club in {year} .",
                (("who founded the {city} {sport} club ?", "person"),
                 ("in what year was the {city} {sport} club founded ?", "year"))),
    "born": ("{person} was born in {city} in {year} .",
             (("where was {person} born ?", "city"), ("in what year was {person} born ?", "year"))),
    "flag": ("the flag of {city} is {colour} .", (("what colour is the flag of {city} ?", "colour"),)),
    "titles": ("the {city} {sport} team won {number} titles .",
               (("how many titles did the {city} {sport} team win ?", "number"),)),
    "built": ("the {city} {building} was built in {year} .",
              (("when was the {city} {building} built ?", "year"),)),
    "coach": ("{person} coaches the {city} {sport} team .",
              (("who coaches the {city} {sport} team ?", "person"),)),
}

# off-topic sentences: no question ever asks about them
FILLERS = ("the weather in {city} was mild .", "{person} likes {colour} bicycles .",
           "the {city} market sells {colour} flowers .", "many people visit {city} in summer .")


@dataclass(frozen=True)
class QAExample:
    """One question on one passage; ``passage.split()[start:end + 1]`` is the answer's words."""

    passage: str
    question: str
    answer: str
    start: int
    end: int
    kind: str  # the fact asked about (a key of FACTS)
    answer_type: str  # "person", "city", "year", "number" or "colour"


def _draw(rng: random.Random, slot: str) -> str:
    if slot == "person":
        return f"{rng.choice(ENTITIES['first'])} {rng.choice(ENTITIES['last'])}"
    return rng.choice(ENTITIES[slot])


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


def _values(rng: random.Random) -> dict[str, str]:
    return {slot: _draw(rng, slot) for slot in ("person", *ENTITIES)}


def filler_sentence(rng: random.Random) -> str:
    """A random off-topic sentence of `FILLERS`, its slots drawn from `rng`."""
    return _fill(rng.choice(FILLERS), _values(rng))


def _example(rng: random.Random) -> QAExample:
    kinds = rng.sample(sorted(FACTS), rng.randint(2, 4))
    facts = {kind: _values(rng) for kind in kinds}
    sentences = [(kind, _fill(FACTS[kind][0], facts[kind])) for kind in kinds]
    if rng.random() < 0.5:
        sentences.append((None, filler_sentence(rng)))
    rng.shuffle(sentences)
    kind = rng.choice(kinds)
    question, slot = rng.choice(FACTS[kind][1])
    answer = facts[kind][slot]
    # the answer's place: the words before its sentence, then its place inside the statement
    before = sum(len(s.split()) for k, s in sentences[:[k for k, _ in sentences].index(kind)])
    head = FACTS[kind][0].split("{" + slot + "}")[0]
    start = before + len(_fill(head, facts[kind]).split())
    return QAExample(" ".join(s for _, s in sentences), _fill(question, facts[kind]), answer,
                     start, start + len(answer.split()) - 1, kind, slot)


def qa_set(split: str = "train", *, n: int | None = None, seed: int = 0) -> list[QAExample]:
    """`n` examples (2000 for "train", 400 for "test" by default) of the templated set.

    Each split has its own stream (Python's generator seeded with ``2 * seed`` for "train",
    ``2 * seed + 1`` for "test"), so the test passages are other draws than the training ones
    and the same `seed` gives the same examples on every machine.
    """
    check_choice(split, ("train", "test"), "split")
    n = {"train": 2000, "test": 400}[split] if n is None else check_positive(n, "n", integer=True)
    check_seed(seed)
    rng = random.Random(2 * seed + (split == "test"))
    return [_example(rng) for _ in range(n)]


def reading_words() -> list[str]:
    """Every word a passage or question of the set can use, sorted."""
    words = {w for pool in ENTITIES.values() for w in pool}
    for statement, questions in FACTS.values():
        for text in (statement, *(q for q, _ in questions)):
            words.update(w for w in text.split() if not w.startswith("{"))
    words.update(w for f in FILLERS for w in f.split() if not w.startswith("{"))
    return sorted(words)


def reading_tokenizer(length: int = 56) -> WordTokenizer:
    """The word tokenizer of passages and questions (`reading_words`), `length` words per text
    (a passage of five facts and an added sentence fit in 56); an unknown word is id 1."""
    return WordTokenizer(reading_words(), length)
