"""Benchmark robustlab's word-level text attacks against TextAttack's components.

    python benchmarks/text_attacks.py [--device cpu|cuda] [--n 200] [--models word-cnn ...]
                                      [--max-words 3] [--min-similarity 0.5] [--seed 0]

TextBugger and TextFooler-style synonym substitution on the project's sentiment classifiers
(`robustlab.text_models.train_text_model`, seed --seed), the first --n test sentences, in both
libraries with the same search and the same budget:

- search: words ranked by how much deleting each lowers the true-class probability, then
  replaced in that order by the candidate that lowers it most, until the prediction flips
  (TextAttack's ``GreedyWordSwapWIR(wir_method="delete")``, each word changed once:
  ``RepeatModification``);
- TextBugger: one character bug per word, at most --max-words bugged words (TextAttack: its
  TextBugger recipe's character transformations, ``MaxWordsPerturbed``; its look-alike swap
  with robustlab's table, below). The recipe's
  Sub-W word swap and Universal Sentence Encoder filter are left out on both sides: robustlab's
  ``textbugger`` has no Sub-W, and the encoder is a TensorFlow Hub download;
- synonyms: candidates from the project's synonym groups (``text_data.synonym_table``), kept
  when their cosine with the word is at least --min-similarity in the project's word vectors
  (TextAttack: a ``WordSwap`` returning the group and ``WordEmbeddingDistance`` over a
  ``WordEmbedding`` of the same vectors; TextFooler's counter-fitted GloVe is a download).

Per model and attack: success rate over the sentences the model gets right, over the successes
the mean edits (each library's own count: bugged or substituted words), character edit
distance and embedding cosine (robustlab's metrics, on both outputs), the seconds of each, and
the share of sentences that both libraries turned into the same text.
Random bug positions differ: robustlab draws them from a torch generator, TextAttack from
NumPy's global one (seeded with --seed).

TextAttack is optional. ``pip install --no-deps`` it and the modules its import reaches
(benchmarks/README.md says why: its declared requirements move packages the project pins). Its import
instantiates a stopword filter that reads NLTK's stopword corpus, a download; when NLTK has
none, the script points NLTK at an empty English list in a temporary folder (no stopword
filter is used here). HotFlip is not compared: TextAttack's recipe swaps whole words through
word-embedding gradients, robustlab's flips characters of a character model.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robustlab.attacks import synonym_attack, textbugger
from robustlab.attacks.text import VISUAL
from robustlab.attacks.text_metrics import edit_distance, embedding_cosine
from robustlab.tables import markdown_table
from robustlab.text_data import sentiment_corpus, synonym_table, word_vectors
from robustlab.text_models import train_text_model

ATTACKS = ("textbugger", "synonym")


def _nltk_stopwords_or_empty() -> None:
    """Give TextAttack's import an NLTK stopword corpus: an empty English list in a temporary
    folder when NLTK has none (its import builds a stopword filter this benchmark never uses)."""
    try:
        import nltk
        nltk.data.find("corpora/stopwords")
    except LookupError:
        root = Path(tempfile.mkdtemp(prefix="nltk-"))
        (root / "corpora" / "stopwords").mkdir(parents=True)
        (root / "corpora" / "stopwords" / "english").write_text("")
        nltk.data.path.insert(0, str(root))
    except ImportError:
        pass  # TextAttack's import will say what is missing


def import_textattack():
    """(textattack, None), or (None, why it does not import)."""
    _nltk_stopwords_or_empty()
    try:
        import textattack
        import textattack.transformations  # noqa: F401
    except Exception as e:  # a missing module, or one of the wrong version
        return None, f"{type(e).__name__}: {e}"
    # its logger says "Unknown if model ... compatible" for every model it did not ship
    logging.getLogger("textattack.shared.utils.install").setLevel(logging.ERROR)
    return textattack, None


def textattack_attack(ta, model, tokenizer, kind: str, args, vectors, synonyms):
    """TextAttack's Attack for `kind` around robustlab's `model`."""
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.pre_transformation import RepeatModification
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.goal_functions import UntargetedClassification
    from textattack.models.wrappers import ModelWrapper
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.shared import WordEmbedding
    from textattack.transformations import (
        CompositeTransformation,
        WordSwap,
        WordSwapNeighboringCharacterSwap,
        WordSwapRandomCharacterDeletion,
        WordSwapRandomCharacterInsertion,
    )

    class Wrapper(ModelWrapper):
        """Class probabilities of robustlab's model for a list of strings."""

        def __init__(self):
            self.model = model

        def __call__(self, texts):
            dev = next(model.parameters()).device
            with torch.no_grad():
                return model(tokenizer.encode(list(texts)).to(dev)).softmax(1).cpu().numpy()

    class GroupSynonyms(WordSwap):
        """The project's synonym group of a word (the cosine filter is a constraint)."""

        def _get_replacement_words(self, word):
            return [s for s, _ in synonyms.get(word, ())]

    class LookAlike(WordSwap):
        """TextBugger's Sub-C with robustlab's look-alike table, at one position drawn from
        NumPy (TextAttack 0.3.11's own WordSwapHomoglyphSwap reads a file its wheel lacks)."""

        def _get_replacement_words(self, word):
            spots = [j for j, c in enumerate(word) if c in VISUAL]
            if not spots:
                return []
            j = spots[np.random.randint(len(spots))]
            return [word[:j] + VISUAL[word[j]] + word[j + 1:]]

    goal = UntargetedClassification(Wrapper())
    constraints = [RepeatModification()]
    if kind == "textbugger":
        ends = dict(random_one=True, skip_first_char=True, skip_last_char=True)
        transformation = CompositeTransformation([
            WordSwapRandomCharacterInsertion(letters_to_insert=" ", **ends),
            WordSwapRandomCharacterDeletion(**ends), WordSwapNeighboringCharacterSwap(**ends),
            LookAlike()])
        constraints.append(MaxWordsPerturbed(max_num_words=args.max_words))
    else:
        matrix = vectors.vectors.numpy().astype(np.float32)
        embedding = WordEmbedding(matrix, dict(vectors.index), dict(enumerate(vectors.words)))
        transformation = GroupSynonyms()
        constraints.append(WordEmbeddingDistance(embedding, include_unknown_words=False,
                                                 min_cos_sim=args.min_similarity))
    return ta.Attack(goal, constraints, transformation, GreedyWordSwapWIR(wir_method="delete"))


def run_textattack(attack, texts, y, seed):
    """Adversarial texts, successes, clean mask and edits of TextAttack's `attack`."""
    from textattack.attack_results import SkippedAttackResult, SuccessfulAttackResult
    np.random.seed(seed)  # its random bug positions
    adversarial, success, clean, edits = [], [], [], []
    for text, label in zip(texts, y.tolist()):
        result = attack.attack(text, label)
        adversarial.append(result.perturbed_result.attacked_text.text)
        clean.append(not isinstance(result, SkippedAttackResult))
        success.append(isinstance(result, SuccessfulAttackResult))
        after = result.perturbed_result.attacked_text
        # a space inserted into a word makes two modified words of one: count the word once
        edits.append(len(after.attack_attrs.get("modified_indices", ()))
                     - max(0, len(after.words) - len(result.original_result.attacked_text.words)))
    return adversarial, success, clean, edits


def summary(texts, adversarial, success, clean, edits, vectors) -> dict:
    """Success rate over the clean-correct texts; means over the successes."""
    won = [i for i, s in enumerate(success) if s]

    def mean(values):
        return float(np.mean(values)) if values else float("nan")
    return {"clean": sum(clean), "success": len(won) / max(sum(clean), 1),
            "edits": mean([edits[i] for i in won]),
            "chars": mean([edit_distance(texts[i], adversarial[i]) for i in won]),
            "cosine": mean([embedding_cosine(texts[i], adversarial[i], vectors) for i in won])}


def run_ours(kind, model, tokenizer, texts, y, args, vectors, synonyms):
    gen = torch.Generator(device=y.device).manual_seed(args.seed)
    if kind == "textbugger":
        result = textbugger(model, texts, y, tokenizer=tokenizer, max_words=args.max_words,
                            generator=gen, vectors=vectors)
    else:
        result = synonym_attack(model, texts, y, tokenizer=tokenizer,
                                min_similarity=args.min_similarity, synonyms=synonyms,
                                vectors=vectors)
    return (result.adversarial, result.success.tolist(), result.clean.tolist(),
            result.edits.tolist())


def check_constraints(kind, texts, adversarial, success, edits, args, vectors) -> None:
    """Each library's successes within the attack's constraint (else the row would lie)."""
    for i, s in enumerate(success):
        if not s:
            continue
        if kind == "textbugger" and edits[i] > args.max_words:
            raise RuntimeError(f"{edits[i]} bugged words > {args.max_words}: {adversarial[i]!r}")
        if kind == "synonym":
            pairs = [(a, b) for a, b in zip(texts[i].split(), adversarial[i].split()) if a != b]
            low = [(a, b) for a, b in pairs if vectors.cosine(a, b) < args.min_similarity - 1e-6]
            if low:
                raise RuntimeError(f"substitutions below cosine {args.min_similarity}: {low}")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=200, help="test sentences")
    p.add_argument("--models", nargs="+", default=["word-cnn", "word-gru", "char-cnn"])
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    p.add_argument("--max-words", type=int, default=3, help="TextBugger's bugged-word budget")
    p.add_argument("--min-similarity", type=float, default=0.5, help="synonym cosine threshold")
    p.add_argument("--seed", type=int, default=0, help="models, bug positions")
    args = p.parse_args(argv)
    if args.n < 1 or args.max_words < 1:
        p.error("--n and --max-words must be >= 1")
    device = torch.device(args.device)
    ta, why = import_textattack()
    if ta is None:
        print(f"TextAttack is not installed or does not import ({why}): `pip install --no-deps "
              f"-r benchmarks/requirements-textattack.txt` to compare with it; comparison "
              f"skipped, robustlab's attacks alone.\n")
    texts, y = sentiment_corpus("test")
    texts, y = texts[:args.n], y[:args.n].to(device)
    vectors = word_vectors()
    synonyms = synonym_table(vectors)
    libs = ["robustlab"] + (["TextAttack"] if ta else [])
    rows = []
    for name in args.models:
        model, tokenizer = train_text_model(name, seed=args.seed, device=device)
        for kind in args.attacks:
            runs = {"robustlab": functools.partial(run_ours, kind, model, tokenizer, texts, y, args,
                                                   vectors, synonyms)}
            if ta:
                attack = textattack_attack(ta, model, tokenizer, kind, args, vectors, synonyms)
                runs["TextAttack"] = functools.partial(run_textattack, attack, texts, y, args.seed)
            out, outputs = {}, {}
            for lib in libs:
                (adv, success, clean, edits), seconds = timed(runs[lib])
                check_constraints(kind, texts, adv, success, edits, args, vectors)
                out[lib] = {**summary(texts, adv, success, clean, edits, vectors), "s": seconds}
                outputs[lib] = adv
            row = [name, kind, out["robustlab"]["clean"]]
            for key in ("success", "edits", "chars", "cosine", "s"):
                row += [out[lib][key] for lib in libs]
            if ta:  # the share of sentences both turned into the same text
                same = np.mean([a == b for a, b in zip(*outputs.values())])
                row += [out["robustlab"]["s"] / out["TextAttack"]["s"], same]
            rows.append(row)
            print(f"  done: {name} {kind}", file=sys.stderr, flush=True)
    head = ["model", "attack", "clean"]
    for col in ("success", "edits", "char edits", "cosine", "s"):
        head += [f"{lib} {col}" for lib in libs]
    head += ["time ratio", "same text"] if ta else []
    budget = (f"TextBugger <= {args.max_words} bugged words; synonyms cosine >= "
              f"{args.min_similarity}")
    print(f"### Text attacks on {args.n} test sentences ({device.type}, seed {args.seed}): "
          f"{budget}; TextAttack {getattr(ta, '__version__', '') or 'present' if ta else 'absent'}"
          f"\n")
    print(markdown_table(head, rows, decimals=[None, None, None] + [3] * (len(head) - 3)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
