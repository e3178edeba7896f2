"""Reading comprehension: the templated QA set, the span reader, SQuAD's scores and AddSent.

The reader is trained once per module (seed 0, seconds); the bands on exact match are the
measured values with margin (see the comments beside them).
"""

import copy
import functools

import pytest
import torch

from robustlab.attacks import ReadingAttackResult, add_off_topic, addonesent, addsent
from robustlab.attacks.reading import RULES, question_to_statement
from robustlab.reading_data import ENTITIES, FACTS, qa_set, reading_tokenizer, reading_words
from robustlab.reading_models import (
    SpanReader,
    answer,
    best_spans,
    exact_match,
    normalize_answer,
    reading_scores,
    token_f1,
    train_reader,
)
from robustlab.zoo_beyond import stored_or_trained
from tests.syncs import explain, grows

from ..conftest import leaves_as_found, seeded

N = 120  # test questions attacked


@functools.cache
def _setup():
    model, tokenizer = stored_or_trained("qa-reader", seed=0)  # the zoo's: trained with seed 0
    test = qa_set("test", n=N)
    return model, tokenizer, ([e.passage for e in test], [e.question for e in test],
                              [e.answer for e in test])


@pytest.fixture(scope="module")
def setup():
    return _setup()


# data


@pytest.mark.parametrize("split, seed", [("train", 0), ("test", 0), ("test", 1)])
def test_every_answer_is_its_span(split, seed):
    words = set(reading_words())
    for e in qa_set(split, seed=seed):
        tokens = e.passage.split()
        assert tokens[e.start:e.end + 1] == e.answer.split(), e
        assert set(tokens) <= words and set(e.question.split()) <= words
        assert e.question.endswith(" ?") and e.passage.endswith(" .")
        assert e.kind in FACTS and e.answer_type in ("person", "city", "year", "number", "colour")


def test_qa_set_is_seeded_and_splits_differ():
    assert qa_set("test", n=50) == qa_set("test", n=50)
    assert qa_set("test", n=50) != qa_set("test", n=50, seed=1)
    train = {e.passage for e in qa_set("train")}
    assert sum(e.passage in train for e in qa_set("test")) == 0
    kinds = {e.answer_type for e in qa_set("train")}
    assert kinds == {"person", "city", "year", "number", "colour"}


@pytest.mark.parametrize("kw, match", [({"split": "val"}, "split"), ({"n": 0}, "n"),
                                       ({"seed": -1}, "seed")])
def test_qa_set_bad_input(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        qa_set(**{"split": "train", **kw})


def test_tokenizer_reads_unknown_words_as_the_unknown_id():
    tok = reading_tokenizer()
    ids = tok.encode(["zorblax founded the lisbon chess club ."])
    assert ids[0, 0] == tok.UNK and ids[0, 1] == tok.index["founded"] and ids[0, 7] == tok.PAD


# model and scores


def test_squad_scores():
    assert normalize_answer("The  Lisbon, club!") == "lisbon club"
    assert exact_match("the Lisbon", "lisbon") == 1.0 and exact_match("oslo", "lisbon") == 0.0
    assert token_f1("ana weber", "weber") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("oslo", "lisbon") == 0.0 and token_f1("the", "") == 1.0
    assert reading_scores(["ana weber", "1931"], ["weber", "1932"]) == pytest.approx(
        {"exact match": 0.0, "f1": 1 / 3})
    with pytest.raises(ValueError, match="predictions"):
        reading_scores(["a"], ["a", "b"])


def test_best_spans_is_the_argmax_over_allowed_spans():
    start = torch.tensor([[0.0, 5.0, 0.0, 0.0, 9.0]])
    end = torch.tensor([[9.0, 0.0, 0.0, 4.0, 0.0]])
    # (0, 0) = 9, (1, 3) = 9 is longer than 2, (4, 4) = 9; ties go to the first in row order
    assert best_spans(start, end, 2).tolist() == [[0, 0]]
    assert best_spans(start, end, 3).tolist() == [[0, 0]]
    end[0, 4] = 1.0  # (4, 4) = 10 now the best; an end before its start is never allowed
    assert best_spans(start, end, 1).tolist() == [[4, 4]]


def test_reader_answers_held_out_questions(setup):
    """Measured exact match on these 400 held-out questions: 1.0 / 1.0 / 0.9925 for reader
    seeds 0 / 1 / 2 (the same with ATEN_CPU_CAPABILITY=default)."""
    model, tokenizer, _ = setup
    test = qa_set("test")
    spans, texts = answer(model, [e.passage for e in test], [e.question for e in test],
                          tokenizer=tokenizer)
    assert spans.shape == (len(test), 2) and (spans[:, 1] >= spans[:, 0]).all()
    assert reading_scores(texts, [e.answer for e in test])["exact match"] >= 0.95


def test_answer_does_not_depend_on_the_batch(setup):
    model, tokenizer, (passages, questions, _) = setup
    _, alone = answer(model, passages[:1], questions[:1], tokenizer=tokenizer)
    _, batch = answer(model, passages[:5], questions[:5], tokenizer=tokenizer)
    assert alone[0] == batch[0]


def test_train_reader_is_deterministic():
    a, _ = train_reader(seed=3, epochs=1, n=64)
    b, _ = train_reader(seed=3, epochs=1, n=64)
    c, _ = train_reader(seed=4, epochs=1, n=64)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.embedding.weight, c.embedding.weight)


def test_answer_bad_input(setup):
    model, tokenizer, (passages, questions, _) = setup
    with pytest.raises(ValueError, match=r"passages\[0\]"):
        answer(model, [" "], questions[:1], tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"questions\[0\]"):
        answer(model, passages[:1], [""], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="differ in length"):
        answer(model, passages[:2], questions[:1], tokenizer=tokenizer)
    with pytest.raises(TypeError, match="passages"):
        answer(model, passages[0], questions[:1], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="max_length"):
        answer(model, passages[:1], questions[:1], tokenizer=tokenizer, max_length=0)
    with pytest.raises(ValueError, match="vocab"):
        SpanReader(0)


# AddSent


def test_question_to_statement_follows_each_rule():
    cases = {"who founded the oslo chess club ?": "kira moreau founded the oslo chess club .",
             "in what year was the oslo chess club founded ?": "the oslo chess club was founded in 1956 .",
             "in what year was kira moreau born ?": "kira moreau was born in 1956 .",
             "when was the oslo tower built ?": "the oslo tower was built in 1956 .",
             "where was kira moreau born ?": "kira moreau was born in 1956 .",
             "what colour is the flag of oslo ?": "the flag of oslo is 1956 .",
             "how many titles did the oslo chess team win ?": "the oslo chess team won 1956 titles ."}
    for question, statement in cases.items():
        fake = "kira moreau" if question.startswith("who") else "1956"
        assert question_to_statement(question, fake) == statement
    # every question of the set has a rule
    assert all(question_to_statement(e.question, "x") for e in qa_set("train"))
    assert len(RULES) == 6
    with pytest.raises(ValueError, match="no rule"):
        question_to_statement("why is the sky blue ?", "x")


def _independent_checks(result: ReadingAttackResult, addsent_like: bool) -> None:
    """The constraint recomputed here, from the strings alone, on every output."""
    for i, (p, q, a, adv, s) in enumerate(zip(result.passages, result.questions, result.answers,
                                              result.adversarial, result.added)):
        words, added = adv.split(), s.split()
        at = next(j for j in range(len(words)) if words[j:j + len(added)] == added
                  and words[:j] + words[j + len(added):] == p.split())
        assert at == 0 or words[at - 1] == ".", "inserted inside a sentence"
        start, end = result.spans[i]
        assert words[start:end + 1] == a.split(), "the true answer moved or vanished"
        truth = a.split()
        assert all(added[j:j + len(truth)] != truth for j in range(len(added))), \
            "the sentence holds the answer"
        assert not {w for w in q.split() if w in {x for pool in ENTITIES.values() for x in pool}} \
            & set(added), "the sentence names the question's entity"
        if addsent_like:
            assert result.fake[i] in s and exact_match(result.fake[i], a) == 0.0
    assert result.constraint_held and all(all(v) for v in result.checks.values())


@pytest.mark.parametrize("position", ["end", "start", 1])
def test_constraint_holds_on_every_output(setup, position):
    model, tokenizer, args = setup
    for attack in (addsent, addonesent, add_off_topic):
        result = attack(model, *args, tokenizer=tokenizer, position=position, generator=seeded())
        _independent_checks(result, attack is not add_off_topic)


def test_addsent_lowers_exact_match_more_than_one_sentence_or_off_topic(setup):
    """Measured on these 120 test questions, reader and generator seeds 0 / 1 / 2 (the same
    with ATEN_CPU_CAPABILITY=default): EM before 1.000 / 1.000 / 0.992; after AddSent 0.325 /
    0.333 / 0.383, after AddOneSent 0.550 / 0.492 / 0.608, after an off-topic sentence 1.000 /
    1.000 / 0.992; AddSent's answer is its fake answer in 0.675 / 0.667 / 0.617 of them."""
    model, tokenizer, args = setup
    full = addsent(model, *args, tokenizer=tokenizer, generator=seeded())
    one = addonesent(model, *args, tokenizer=tokenizer, generator=seeded())
    control = add_off_topic(model, *args, tokenizer=tokenizer, generator=seeded())
    s, s1, s0 = full.summary(), one.summary(), control.summary()
    assert s["EM before"] >= 0.95 and s["EM after"] <= 0.5
    assert s["EM after"] <= s1["EM after"] - 0.1
    assert s0["EM after"] >= 0.9
    assert full.to_fake >= 0.5  # fooled into the fake answer, not into noise
    table = full.table()
    assert "addsent" in table and "EM after" in table and str(full) == table
    assert "added sentence" in full.examples()


def test_addsent_is_deterministic(setup):
    model, tokenizer, args = setup
    a = addsent(model, *args, tokenizer=tokenizer, candidates=4, generator=seeded(5))
    b = addsent(model, *args, tokenizer=tokenizer, candidates=4, generator=seeded(5))
    c = addsent(model, *args, tokenizer=tokenizer, candidates=4, generator=seeded(6))
    assert a == b and a.added != c.added


def test_model_and_inputs_left_as_found(setup):
    model, tokenizer, args = setup
    messy = copy.deepcopy(model)
    messy.passage.train()  # a mixed-mode model must come back mixed
    copies = [list(a) for a in args]
    result = leaves_as_found(lambda: addsent(messy, *args, tokenizer=tokenizer, candidates=2,
                                             generator=seeded()), messy)
    assert [list(a) for a in args] == copies and result.passages == args[0]
    with torch.no_grad():
        assert addonesent(messy, *args, tokenizer=tokenizer, generator=seeded()).constraint_held


def test_unknown_words_are_read_not_refused(setup):
    model, tokenizer, _ = setup
    passage = "zorblax weber founded the lisbon chess club in 1931 ."
    result = addsent(model, [passage], ["who founded the lisbon chess club ?"], ["zorblax weber"],
                     tokenizer=tokenizer, generator=seeded())
    assert result.constraint_held and result.passages == [passage]


def test_bad_input(setup):
    model, tokenizer, (passages, questions, answers) = setup
    p, q, a = passages[:2], questions[:2], answers[:2]
    cases = [
        (dict(passages=["", p[1]]), ValueError, r"passages\[0\]"),
        (dict(questions=[q[0], " "]), ValueError, r"questions\[1\]"),
        (dict(questions=q[:1]), ValueError, "differ in length"),
        (dict(answers=a[:1]), ValueError, "answers"),
        (dict(answers=["nowhere to be seen", a[1]]), ValueError, r"answers\[0\]"),
        (dict(answers=[a[0], ""]), ValueError, r"answers\[1\]"),
        (dict(questions=["why is the sky blue ?", q[1]]), ValueError, r"questions\[0\]"),
        (dict(questions=[q[0], "who founded the club ?"]), ValueError, r"questions\[1\] names no"),
        (dict(position="middle"), ValueError, "position"),
        (dict(position=-1), ValueError, "position"),
        (dict(candidates=0), ValueError, "candidates"),
        (dict(tokenizer="words"), TypeError, "tokenizer"),
        (dict(generator=0), TypeError, "generator"),
        (dict(model="reader"), TypeError, "model"),
    ]
    for change, error, match in cases:
        kw = {**dict(model=model, passages=p, questions=q, answers=a, tokenizer=tokenizer,
                     generator=seeded()), **change}
        with pytest.raises(error, match=match):
            addsent(kw.pop("model"), kw.pop("passages"), kw.pop("questions"), kw.pop("answers"), **kw)


def test_host_reads_do_not_grow_with_the_number_of_candidates(setup):
    """One read of the generator's draw and one of the whole batch of candidates: the count is
    the same for 2 and 8 candidates per question (all within one batch of the reader)."""
    model, tokenizer, args = setup
    small, large = grows(lambda k: addsent(model, *(a[:20] for a in args), tokenizer=tokenizer,
                                           candidates=k, generator=seeded()), 2, 8)
    assert small.total == large.total, explain(small, large)
