"""AddSent (Jia and Liang, "Adversarial Examples for Evaluating Reading Comprehension Systems",
EMNLP 2017) on the extractive readers of `robustlab.reading_models`: a distracting sentence,
inserted into the passage, that looks like the question but is about something else.

AddSent's four steps, for a question and its true answer:

1. mutate the question: every entity, number and colour becomes another of its type ("lisbon"
   -> "oslo", "1931" -> "1956"), so the question asks about something the passage never names
   (drawn at random: the paper takes nearest GloVe neighbours, which made-up names lack);
2. make a fake answer of the true answer's type (a person for "who", a year for "when");
3. turn the mutated question and the fake answer into a statement with rules keyed on the
   question's wh-phrase ("who founded the oslo chess club ?" -> "kira moreau founded the oslo
   chess club .");
4. insert the statement into the passage (at the end by default, as the paper does); the
   paper's crowdworkers fixed the grammar of its rule output, which templated text never needs.

`addsent` makes `candidates` such sentences per example, asks the model about each (one batch,
one read) and keeps the one that hurts most (lowest F1, then lowest probability of the true
span); `addonesent` adds one random candidate without looking at the model (the paper's
model-independent AddOneSent); `add_off_topic` inserts a random off-topic filler sentence, the
control that shows it is the resemblance to the question, not any added sentence, that fools
the model. Each checks its constraint on every output and reports it (`ReadingAttackResult`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_generator, check_positive
from .._model import check_model
from .._random import draw_device
from ..reading_data import ENTITIES, filler_sentence
from ..reading_models import (
    best_spans,
    encode_pairs,
    exact_match,
    read_logits,
    reading_scores,
    token_f1,
)
from ..tables import Tabular, markdown_table
from ..text_data import WordTokenizer

__all__ = ["RULES", "ReadingAttackResult", "add_off_topic", "addonesent", "addsent",
           "question_to_statement"]

# step 3: (question pattern, statement, the answer's type); groups fill the statement in order
RULES = (
    (r"who (\w+) (.+) \?", "{answer} {0} {1} .", "person"),
    (r"in what year was (.+) (\w+) \?", "{0} was {1} in {answer} .", "year"),
    (r"when was (.+) (\w+) \?", "{0} was {1} in {answer} .", "year"),
    (r"where was (.+) born \?", "{0} was born in {answer} .", "city"),
    (r"what colour is (.+) \?", "{0} is {answer} .", "colour"),
    (r"how many (\w+) did (.+) win \?", "{1} won {answer} {0} .", "number"),
)
_TYPE_OF = {w: kind for kind, pool in ENTITIES.items() for w in pool}


def _rule(question: str, name: str) -> tuple[str, tuple[str, ...], str]:
    for pattern, statement, kind in RULES:
        found = re.fullmatch(pattern, question)
        if found:
            return statement, found.groups(), kind
    raise ValueError(f"{name} matches no rule of RULES, so it cannot become a statement: "
                     f"{question!r}")


def question_to_statement(question: str, answer: str) -> str:
    """Step 3 of AddSent: the statement that answers `question` with `answer`, by the first
    of `RULES` whose pattern matches ("when was the oslo tower built ?", "1956" -> "the oslo
    tower was built in 1956 .")."""
    statement, groups, _ = _rule(question, "question")
    return statement.format(*groups, answer=answer)


def _other(rng: random.Random, kind: str, avoid: set[str]) -> str:
    return rng.choice([w for w in ENTITIES[kind] if w not in avoid])


def _mutate(rng: random.Random, question: str, avoid: set[str]) -> str:
    """Step 1: every entity, number and colour word replaced by another of its type."""
    return " ".join(_other(rng, _TYPE_OF[w], avoid | {w}) if w in _TYPE_OF else w
                    for w in question.split())


def _fake(rng: random.Random, kind: str, avoid: set[str]) -> str:
    """Step 2: an answer of `kind` sharing no word with `avoid` (the truth, the question)."""
    if kind == "person":
        return f"{_other(rng, 'first', avoid)} {_other(rng, 'last', avoid)}"
    return _other(rng, kind, avoid)


def _contains(words: list[str], part: list[str]) -> bool:
    return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))


@dataclass
class ReadingAttackResult(Tabular):
    """What a distracting-sentence attack did: per example the inserted sentence, the model's
    answers before and after, the fake answer it aimed at ("" for a control sentence), and the
    constraint checks (each a list of bools, one per example):

    - ``verbatim``: the adversarial passage is the original one with one sentence inserted;
    - ``answer_kept``: the true answer still stands at its (shifted) span, ``spans[i]``;
    - ``no_answer``: the added sentence does not contain the true answer;
    - ``mutated``: the added sentence names none of the question's entities, numbers or
      colours (it is about something else, so it cannot answer the real question).
    """

    attack: str
    constraint: str
    passages: list[str]
    questions: list[str]
    answers: list[str]
    adversarial: list[str]
    added: list[str]
    fake: list[str]
    before: list[str]
    after: list[str]
    spans: list[tuple[int, int]]
    checks: dict[str, list[bool]]

    @property
    def constraint_held(self) -> bool:
        """Every check holds on every example."""
        return all(all(v) for v in self.checks.values())

    @property
    def to_fake(self) -> float:
        """The share of examples whose answer after the attack is the fake answer (NaN for a
        control sentence, which has none)."""
        hits = [exact_match(a, f) for a, f in zip(self.after, self.fake) if f]
        return sum(hits) / len(hits) if hits else float("nan")

    def summary(self) -> dict[str, float]:
        clean, adv = reading_scores(self.before, self.answers), reading_scores(self.after, self.answers)
        return {"EM before": clean["exact match"], "EM after": adv["exact match"],
                "F1 before": clean["f1"], "F1 after": adv["f1"], "to fake answer": self.to_fake,
                "constraint held": sum(all(c) for c in zip(*self.checks.values())) / len(self.answers)}

    def table(self) -> str:
        s = self.summary()
        return markdown_table(["attack", "constraint", "examples", *s],
                              [[self.attack, self.constraint, len(self.answers), *s.values()]],
                              decimals=[None, None, None] + [3] * len(s))

    def examples(self, k: int = 3) -> str:
        """The first `k` examples whose answer changed: question, added sentence, answers."""
        rows = [[q, s, t, a] for q, s, t, b, a in zip(self.questions, self.added, self.answers,
                                                      self.before, self.after) if a != b][:k]
        return markdown_table(["question", "added sentence", "answer", "model after"], rows)


def _inputs(model, passages, questions, answers, tokenizer, position):
    """Check the arguments; return each answer's (start, end) in its passage."""
    check_model(model)
    if not isinstance(tokenizer, WordTokenizer):
        raise TypeError(f"tokenizer must be a robustlab.text_data.WordTokenizer, got "
                        f"{type(tokenizer).__name__}")
    encode_pairs(tokenizer, passages, questions)  # non-empty strings, one length
    if isinstance(answers, str) or not isinstance(answers, (list, tuple)) or len(answers) != len(passages):
        raise ValueError(f"answers must be a list of {len(passages)} strings, one per passage")
    if not (position in ("start", "end") or (isinstance(position, int) and not isinstance(position, bool)
                                             and position >= 0)):
        raise ValueError(f"position must be 'start', 'end' or a sentence index >= 0, got {position!r}")
    for i, q in enumerate(questions):
        if not _TYPE_OF.keys() & set(q.split()):
            raise ValueError(f"questions[{i}] names no entity, number or colour, so no sentence "
                             f"can be about a mutated one: {q!r}")
    spans = []
    for i, (p, a) in enumerate(zip(passages, answers)):
        words, part = p.split(), a.split() if isinstance(a, str) else []
        at = next((j for j in range(len(words) - len(part) + 1) if part and words[j:j + len(part)] == part),
                  None)
        if at is None:
            raise ValueError(f"answers[{i}] ({a!r}) is not a span of passages[{i}]")
        spans.append((at, at + len(part) - 1))
    return spans


def _insert(passage: str, sentence: str, position) -> tuple[str, int, int]:
    """The passage with `sentence` inserted before sentence `position` (or at the start or
    end); returns it, the word index it went to and its length in words."""
    words = passage.split()
    starts = [0] + [i + 1 for i, w in enumerate(words[:-1]) if w == "."] + [len(words)]
    index = {"start": 0, "end": len(starts) - 1}.get(position, position)
    at = starts[min(index, len(starts) - 1)]
    added = sentence.split()
    return " ".join(words[:at] + added + words[at:]), at, len(added)


def _checked(passage, question, truth, span, sentence, adversarial, at, size):
    """The four constraint checks of one output, recomputed from the strings themselves."""
    words, adv, added, truth_words = passage.split(), adversarial.split(), sentence.split(), truth.split()
    start = span[0] + (size if at <= span[0] else 0)
    entities = {w for w in question.split() if w in _TYPE_OF}
    return (start, start + len(truth_words) - 1), {
        "verbatim": adv[:at] + adv[at + size:] == words and adv[at:at + size] == added,
        "answer_kept": adv[start:start + len(truth_words)] == truth_words,
        "no_answer": not _contains(added, truth_words),
        "mutated": not entities & set(added)}


def _rng(generator: torch.Generator | None) -> random.Random:
    """A Python generator for the string choices, seeded by one draw from `generator` (on its
    own device; the global stream of the CPU without one): one read per attack."""
    dev = draw_device(check_generator(generator), "cpu")
    return random.Random(int(torch.randint(2 ** 62, (1,), generator=generator, device=dev)))


class _Candidate(NamedTuple):
    example: int
    sentence: str
    fake: str
    passage: str  # the adversarial passage
    span: tuple[int, int]  # the true answer's span in it
    checks: dict[str, bool]


def _run(name, constraint, model, passages, questions, answers, tokenizer, position, make,
         max_length):
    """Insert ``make(i) -> [(sentence, fake), ...]`` candidates into passage i, read the model
    on all of them and the clean passages in one batch and keep, per example, the candidate of
    lowest F1 (then lowest log-probability of the true span)."""
    spans = _inputs(model, passages, questions, answers, tokenizer, position)
    check_positive(max_length, "max_length", integer=True)
    cands = []
    for i, (p, q, a) in enumerate(zip(passages, questions, answers)):
        for sentence, fake in make(i):
            adversarial, at, size = _insert(p, sentence, position)
            span, checks = _checked(p, q, a, spans[i], sentence, adversarial, at, size)
            cands.append(_Candidate(i, sentence, fake, adversarial, span, checks))
    texts_in = [c.passage for c in cands] + list(passages)
    width = max(len(t.split()) for t in texts_in)
    if width > tokenizer.length:
        raise ValueError(f"a passage with its added sentence has {width} words, more than the "
                         f"tokenizer's length {tokenizer.length}")
    start, end = read_logits(model, encode_pairs(
        tokenizer, texts_in, [questions[c.example] for c in cands] + list(questions)))
    truth = torch.tensor([c.span for c in cands] + spans, device=start.device)
    logp = start.log_softmax(1).gather(1, truth[:, :1]) + end.log_softmax(1).gather(1, truth[:, 1:])
    # one read for the whole batch: each passage's predicted span and its true span's score
    read = torch.cat([best_spans(start, end, max_length).double(), logp.double()], 1).tolist()
    said = [" ".join(t.split()[int(s):int(e) + 1]) for t, (s, e, _) in zip(texts_in, read)]
    best: dict[int, tuple[tuple[float, float], int]] = {}
    for j, c in enumerate(cands):
        key = (token_f1(said[j], answers[c.example]), read[j][2])
        if c.example not in best or key < best[c.example][0]:
            best[c.example] = (key, j)
    chosen = [best[i][1] for i in range(len(passages))]
    picked = [cands[j] for j in chosen]
    return ReadingAttackResult(
        name, constraint, list(passages), list(questions), list(answers),
        [c.passage for c in picked], [c.sentence for c in picked], [c.fake for c in picked],
        said[len(cands):], [said[j] for j in chosen], [c.span for c in picked],
        {key: [c.checks[key] for c in picked] for key in picked[0].checks})


def _addsent_candidates(questions, answers, candidates, rng):
    """``make(i)``: `candidates` (statement, fake answer) pairs for example i, steps 1-3."""
    def make(i):
        _, _, kind = _rule(questions[i], f"questions[{i}]")
        avoid = set(answers[i].split()) | set(questions[i].split())
        out = []
        for _ in range(candidates):
            mutated = _mutate(rng, questions[i], avoid)
            fake = _fake(rng, kind, avoid | set(mutated.split()))
            out.append((question_to_statement(mutated, fake), fake))
        return out
    return make


def addsent(model: nn.Module, passages: list[str], questions: list[str], answers: list[str], *,
            tokenizer: WordTokenizer, candidates: int = 8, position: str | int = "end",
            max_length: int = 4, generator: torch.Generator | None = None) -> ReadingAttackResult:
    """AddSent (Jia and Liang, EMNLP 2017, the model-querying adversary): for each example
    make `candidates` distracting sentences (mutated question + fake answer -> statement, steps
    1-3 of the module docstring), insert each at `position` ("end", "start" or before sentence
    k, counted from 0, the end when k is past the last), ask the model, and keep the one whose
    answer scores the lowest F1 against the truth (ties: the lowest log-probability of the true
    span): the paper's rule, the candidate the model fails on most.

    Arguments:
        answers: the true answers' texts, each a span of words of its passage.
        tokenizer: the reader's tokenizer (`reading_data.reading_tokenizer`).
        max_length: the longest answer the reader may give, in words (`reading_models.answer`).
        generator: the random source of the mutations and fake answers.
    Constraint, checked and reported per example: the original passage verbatim plus one
    sentence, the true answer still at its span, the sentence without the true answer and
    naming none of the question's entities. One batch of queries, one read.
    """
    check_positive(candidates, "candidates", integer=True)
    make = _addsent_candidates(questions, answers, candidates, _rng(generator))
    return _run("addsent", f"one sentence inserted ({candidates} tried)", model, passages,
                questions, answers, tokenizer, position, make, max_length)


def addonesent(model: nn.Module, passages: list[str], questions: list[str], answers: list[str], *,
               tokenizer: WordTokenizer, position: str | int = "end", max_length: int = 4,
               generator: torch.Generator | None = None) -> ReadingAttackResult:
    """AddOneSent (Jia and Liang, 2017, the model-independent adversary): one random AddSent
    candidate per example, chosen without asking the model; the same constraint as `addsent`."""
    make = _addsent_candidates(questions, answers, 1, _rng(generator))
    return _run("addonesent", "one sentence inserted (1 tried)", model, passages, questions,
                answers, tokenizer, position, make, max_length)


def add_off_topic(model: nn.Module, passages: list[str], questions: list[str], answers: list[str], *,
                  tokenizer: WordTokenizer, position: str | int = "end", max_length: int = 4,
                  generator: torch.Generator | None = None) -> ReadingAttackResult:
    """The control of AddSent: insert one random off-topic sentence (`reading_data.FILLERS`,
    "the weather in oslo was mild .") that shares nothing with the question but its kind of
    words; the same constraint as `addsent` (the fake answer is "": there is none)."""
    rng = _rng(generator)

    def make(i):
        avoid = set(answers[i].split()) | {w for w in questions[i].split() if w in _TYPE_OF}
        while True:  # a filler naming the answer or the question's entity is drawn again
            sentence = filler_sentence(rng)
            if not avoid & set(sentence.split()):
                return [(sentence, "")]
    return _run("off-topic", "one sentence inserted", model, passages, questions, answers,
                tokenizer, position, make, max_length)
