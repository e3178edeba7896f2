"""Lesson 02d's exercise checks accept the solutions and reject wrong answers, and its widget
(`robustlab.widgets.text_attack_explorer`) reacts to its controls and keeps each attack's
constraint.

Each exercise test runs the lesson's own cells (the solution, then the check) in a namespace that
holds what the checks read (the zoo's word CNN and character CNN, as the lesson loads them for
seed 0, HotFlip's and TextBugger's results on the first test sentences), then plants wrong
answers in place of the solution and expects the check to fail.
"""

import functools

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from robustlab import attacks, widgets  # noqa: E402
from robustlab.text_data import sentiment_corpus, word_vectors  # noqa: E402
from robustlab.zoo_beyond import load  # noqa: E402

from .lesson_cells import Lesson, cell_after, cell_starting, planted  # noqa: E402

LESSON = Lesson("02d-beyond-images.ipynb")
N = 60  # test sentences the checks read


@functools.cache
def _models():
    return {arch: load(f"sentiment-{arch}") for arch in ("word-cnn", "char-cnn")}


@pytest.fixture(scope="module")
def cells():
    return LESSON.cells()


run = LESSON.run


@pytest.fixture(scope="module")
def lesson_state():
    """What the checks read, as the lesson names it."""
    ns: dict = {}
    exec("import torch\nimport robustlab\nfrom robustlab import attacks, train", ns)
    texts, y = sentiment_corpus("test")
    (cnn, wtok), (char_cnn, ctok) = _models()["word-cnn"], _models()["char-cnn"]
    texts, y = texts[:N], y[:N]
    flip = attacks.hotflip(char_cnn, texts, y, tokenizer=ctok, budget=3)
    bugged = {"word-cnn": attacks.textbugger(cnn, texts, y, tokenizer=wtok,
                                             generator=torch.Generator().manual_seed(0))}
    ns.update(SEED=0, texts=texts, y=y, cnn=cnn, wtok=wtok, flip=flip, bugged=bugged)
    return ns


# --- exercise 1: edit distance ---------------------------------------------------------------------

LEVENSHTEIN_MISTAKES = {
    "a substitution costs two": [("prev[j - 1] + (a[i - 1] != b[j - 1])",
                                  "prev[j - 1] + 2 * (a[i - 1] != b[j - 1])")],
    "no insertion": [("row[j] = min(prev[j] + 1, row[j - 1] + 1, ", "row[j] = min(prev[j] + 1, ")],
    "first row all zero": [("prev = list(range(len(b) + 1))", "prev = [0] * (len(b) + 1)")],
    "first column all zero": [("row = [i] + [0] * len(b)", "row = [0] * (len(b) + 1)")],
    "the wrong corner": [("return prev[-1]", "return prev[0]")],
    "a substitution is free": [("prev[j - 1] + (a[i - 1] != b[j - 1])", "prev[j - 1]")],
}

# --- exercise 2: deletion importance ---------------------------------------------------------------

IMPORTANCE_MISTAKES = {
    "the other class's probability": [(".softmax(1)[:, label]", ".softmax(1)[:, 1 - label]")],
    "logits, not probabilities": [(".softmax(1)[:, label]", "[:, label]")],
    "the rise, not the drop": [("(p[0] - p[1:])", "(p[1:] - p[0])")],
    "two words deleted": [("words[i + 1:]", "words[i + 2:]")],
    "the words in reverse order": [("(p[0] - p[1:]).tolist()", "(p[0] - p[1:]).flip(0).tolist()")],
    "softmax over the batch": [(".softmax(1)[:, label]", ".softmax(0)[:, label]")],
    "the relative drop": [("(p[0] - p[1:])", "(p[0] - p[1:]) / p[0]")],
}

# exercise 1 and 2: the solution cell starts with `head`
WRITTEN = {"def levenshtein": LEVENSHTEIN_MISTAKES, "def deletion_importance": IMPORTANCE_MISTAKES}
PREDICT = "### BEGIN SOLUTION\nrestored_by_spelling"  # exercise 3's answer cell


# each exercise with its solution (mistake None), then with each planted mistake
CASES = [(head, None) for head in [*WRITTEN, PREDICT]] + \
    [(head, mistake) for head in WRITTEN for mistake in sorted(WRITTEN[head])]


@pytest.mark.parametrize("head, mistake", CASES)
def test_exercise_checks(cells, lesson_state, head, mistake):
    """The check passes on the lesson's solution and fails on each planted mistake."""
    answer = cell_starting(cells, head)
    ns = run(answer if mistake is None else planted(answer, WRITTEN[head][mistake]),
             dict(lesson_state))
    if mistake is None:
        run(cell_after(cells, head), ns)
    else:
        with pytest.raises(AssertionError):
            run(cell_after(cells, head), ns)


@pytest.mark.parametrize("answers", [{"restored_by_spelling": "few"},
                                     {"fooled_after_correction": "most"},
                                     {"fooled_after_correction": "some"}])
def test_prediction_exercise_rejects_wrong_predictions(cells, lesson_state, answers):
    ns = dict(lesson_state)
    run(cell_starting(cells, PREDICT), ns)
    ns.update(answers)
    with pytest.raises(AssertionError, match="you predicted"):
        run(cell_after(cells, PREDICT), ns)


# --- the widget ------------------------------------------------------------------------------------

def test_marked_edits_highlight_the_changed_words():
    left, right = widgets.marked_edits("the movie was terrible", "the movie was terrib1e")
    assert left.startswith("the movie was <span") and ">terrible</span>" in left
    assert ">terrib1e</span>" in right and right.count("<span") == 1
    left, right = widgets.marked_edits("a b", "a b and the popcorn was great")
    assert "<span" not in left and ">and the popcorn was great</span>" in right
    assert widgets.marked_edits("x <y>", "x <y>") == ("x &lt;y&gt;", "x &lt;y&gt;")


def test_text_attack_explorer_keeps_each_constraint():
    models = _models()
    w = widgets.text_attack_explorer(models, sentence="I found the movie terrible",
                                     vectors=word_vectors(), budget=2)
    s = w.state
    assert s["model"] == "word-cnn" and s["attack"] == "TextBugger" and s["answer"] == "negative"
    assert s["text"] == "i found the movie terrible"  # lower-cased, as the corpus
    assert s["edits"] <= 2 and s["fooled"] == (s["answer_after"] != s["answer"])
    assert "cosine" in s["similarity"] and tuple(w.attack.options) == widgets.beyond.WORD_ATTACKS
    w.attack.value = "synonyms"
    words = list(zip(w.state["text"].split(), w.state["adversarial"].split()))
    assert len(words) == 5 and sum(a != b for a, b in words) == w.state["edits"] <= 2
    w.attack.value = "distracting clause"
    tail = w.state["adversarial"][len(w.state["text"]) + 1:]
    assert w.state["adversarial"].startswith(w.state["text"]) and tail in attacks.DISTRACTORS
    w.model.value = "char-cnn"  # HotFlip becomes available, synonyms are gone
    assert tuple(w.attack.options) == widgets.beyond.CHAR_ATTACKS
    assert w.state["attack"] == "distracting clause" and w.state["model"] == "char-cnn"
    w.attack.value = "HotFlip"
    for budget in (1, 3):
        w.budget.value = budget
        s = w.state
        assert attacks.edit_distance(s["text"], s["adversarial"]) <= budget == w.budget.value
    w.text.value = "the acting was perfect"
    assert w.state["answer"] == "positive" and w.state["fooled"]
    assert w.state["confidence_after"] < 0.5 < w.state["confidence"]


def test_text_attack_explorer_reports_what_it_cannot_read():
    models = _models()
    w = widgets.text_attack_explorer(models, sentence="the plot was zorgly")
    assert w.state["unknown"] == ["zorgly"] and "unknown to this model: zorgly" in w.state["html"]
    assert "</div>" not in w.state["html"], "the static site cuts a widget's block at </div>"
    w.text.value = "   "
    assert w.state["error"] == "type a sentence" and "adversarial" not in w.state
    w.text.value = " ".join(["good"] * 30)  # longer than the word tokenizer's 24 words
    assert "more than the tokenizer's length" in w.state["error"]
    w.text.value = "the plot was good"  # and it recovers
    assert "error" not in w.state and w.state["answer"] == "positive"
    with pytest.raises(ValueError, match="sentence must be a non-empty string"):
        widgets.text_attack_explorer(models, sentence="")
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        widgets.text_attack_explorer({}, sentence="good")
