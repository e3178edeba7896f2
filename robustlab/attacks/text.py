"""Attacks on text classifiers: HotFlip's character flips (white box), TextBugger's typos and
TextFooler's synonym substitutions (black box, scores only), on the models of
`robustlab.text_models` or any embedding model (`robustlab.tokens`) with a tokenizer of
`robustlab.text_data`.

Each takes texts (a list of strings) and labels on the model's device, enforces its constraint
(a budget of flips, of bugged words, a similarity threshold), leaves the model as found and
returns a `TextAttackResult` (`text_metrics`): the adversarial texts, which succeed, the edits
and the similarity kept. Text is discrete: HotFlip's beam search runs on tensors without host
reads; the two black-box searches pick strings, so they read the model's scores back once per
round of queries (a round per word position), as a search over strings must.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_bool, check_choice, check_generator, check_in_range, check_labels, check_positive
from .._model import check_model, correct, frozen, model_device, predict
from ..losses import LOSSES
from ..text_data import CharTokenizer, WordVectors, synonym_table
from ..tokens import check_embedding_model, check_token_ids
from .text_metrics import TextAttackResult, text_similarity

__all__ = ["DISTRACTORS", "add_sentence", "hotflip", "hotflip_scores", "synonym_attack",
           "text_transfer", "textbugger"]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# TextBugger's Sub-C: characters that look alike
VISUAL = {"o": "0", "l": "1", "i": "1", "a": "@", "e": "3", "s": "$", "t": "7", "b": "8", "g": "9"}


def _inputs(model, texts, y, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    check_model(model)
    if not hasattr(tokenizer, "encode") or not hasattr(tokenizer, "decode"):
        raise TypeError(f"tokenizer must be a robustlab.text_data tokenizer, got "
                        f"{type(tokenizer).__name__}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype.is_floating_point:
        raise TypeError("y must be a 1-D integer tensor of labels")
    ids = tokenizer.encode(texts)  # checks texts
    if len(ids) != len(y):
        raise ValueError(f"y has {len(y)} labels for {len(ids)} texts")
    dev = model_device(model) or y.device
    if y.device != dev:
        raise ValueError(f"y is on {y.device} but the model is on {dev}")
    return ids.to(dev), y.long()


def _result(attack, constraint, model, tokenizer, texts, adversarial, y, edits, vectors):
    dev = y.device
    clean = correct(model, tokenizer.encode(texts).to(dev), y)
    fooled = ~correct(model, tokenizer.encode(adversarial).to(dev), y)
    return TextAttackResult(attack, constraint, list(texts), adversarial, clean, clean & fooled,
                            torch.where(clean, edits.to(dev), 0),
                            text_similarity(list(texts), adversarial, vectors))


def hotflip_scores(model: nn.Module, ids: torch.Tensor, y: torch.Tensor, *,
                   loss: str = "ce") -> torch.Tensor:
    """First-order change of the loss for every single flip: ``scores[n, i, b]`` estimates
    L(x with symbol i set to b) - L(x), HotFlip's eq. (Ebrahimi et al., ACL 2018, sec. 3.1)

        dL(i: a -> b) ~= grad_{x_i} L . (e_b - e_a) = (E grad_{e_i} L)_b - (E grad_{e_i} L)_a

    for the one-hot input x, embedding matrix E (rows e_v = ``model.embed(v)``) and current
    symbol a at position i; it is exact when the loss is linear in the embeddings. `loss` is
    "ce" (the paper's) or "margin". Returns (N, L, vocab), zero at each current symbol.
    """
    check_embedding_model(model)
    vocab = getattr(model, "vocab", None)
    if not isinstance(vocab, int):
        raise TypeError("model must have an integer attribute vocab (the embedding rows)")
    ids = check_token_ids(ids, vocab)
    y = check_labels(y, ids)
    check_choice(loss, ("ce", "margin"), "loss")
    with frozen(model):
        return _scores(model, ids, y, LOSSES[loss], vocab)[0]


def _scores(model, ids, y, loss_fn, vocab):
    """(scores (N, L, V), loss (N,)) at ids; run inside `frozen`."""
    table = model.embed(torch.arange(vocab, device=ids.device)[None])[0].detach()  # (V, d)
    e = model.embed(ids).detach().requires_grad_(True)
    loss = loss_fn(model.forward_embeds(e), y)
    (g,) = torch.autograd.grad(loss.sum(), e)
    s = g @ table.T  # (N, L, V)
    return s - s.gather(2, ids[..., None]), loss.detach()


def hotflip(model: nn.Module, texts: list[str], y: torch.Tensor, *, tokenizer, budget: int = 3,
            beam: int = 4, loss: str = "ce", vectors: WordVectors | None = None) -> TextAttackResult:
    """HotFlip (Ebrahimi, Rao, Lowd and Dou, ACL 2018): flip up to `budget` letters of each text
    to other letters, choosing flips by their first-order loss change (`hotflip_scores`) in a
    beam search of width `beam`.

    At each of `budget` steps every beam member proposes its `beam` best flips by the estimate;
    the beam * beam candidates are scored by their true loss (one batched forward pass) and the
    best `beam` kept. A text stops at the first step with a misclassified candidate (the one of
    highest loss is kept), so its edits are the fewest flips this search found. Only letters are
    flipped, to letters. The search is on tensors, without host reads.
    Constraint: at most `budget` flipped characters (edit distance <= budget).
    """
    if not isinstance(tokenizer, CharTokenizer):
        raise TypeError(f"tokenizer must be a CharTokenizer (HotFlip flips characters), got "
                        f"{type(tokenizer).__name__}")
    ids, y = _inputs(check_embedding_model(model), texts, y, tokenizer)
    if getattr(model, "vocab", None) != tokenizer.vocab:
        raise ValueError(f"model.vocab ({getattr(model, 'vocab', None)}) must equal the "
                         f"tokenizer's vocab ({tokenizer.vocab})")
    check_positive(budget, "budget", integer=True)
    check_positive(beam, "beam", integer=True)
    check_choice(loss, ("ce", "margin"), "loss")
    vocab, loss_fn, n, length = model.vocab, LOSSES[loss], *ids.shape
    letters = torch.tensor([tokenizer.index[c] for c in LETTERS], device=ids.device)
    is_letter = torch.zeros(vocab, dtype=torch.bool, device=ids.device)
    is_letter[letters] = True
    movable = is_letter[ids].repeat_interleave(beam, 0)  # (N*B, L)
    big = torch.finfo(torch.float32).max
    with frozen(model):
        cur = ids.repeat_interleave(beam, 0)
        alive = (torch.arange(beam, device=ids.device) == 0).repeat(n)  # one distinct start
        best, edits = ids.clone(), torch.zeros(n, dtype=torch.long, device=ids.device)
        done = predict(model, ids).argmax(1) != y
        yb, yc = y.repeat_interleave(beam), y.repeat_interleave(beam * beam)
        for step in range(budget):
            s, _ = _scores(model, cur, yb, loss_fn, vocab)
            allowed = movable[..., None] & is_letter & (torch.arange(vocab, device=ids.device)
                                                        != cur[..., None])
            est = s.masked_fill(~allowed, -big).flatten(1)
            top = est.topk(beam, 1).indices  # (N*B, B)
            cand = cur.repeat_interleave(beam, 0)
            rows = torch.arange(len(cand), device=ids.device)
            cand[rows, top.flatten() // vocab] = top.flatten() % vocab
            z = model(cand)
            fooled = z.argmax(1) != yc
            ok = alive.repeat_interleave(beam) & (est.gather(1, top).flatten() > -big)
            loss_c = torch.where(ok, loss_fn(z, yc), -torch.inf).view(n, beam * beam)
            keep = loss_c.topk(beam, 1)
            pick = keep.indices + torch.arange(n, device=ids.device)[:, None] * beam * beam
            cur, alive = cand[pick.flatten()], keep.values.flatten() > -torch.inf
            first = (ok & fooled).view(n, -1)
            found = first.any(1) & ~done
            hit = cand.view(n, beam * beam, length)[
                torch.arange(n, device=ids.device),
                torch.where(first, loss_c, -torch.inf).argmax(1)]  # the fooled one of most loss
            best = torch.where(found[:, None], hit, best)
            edits = torch.where(found, step + 1, edits)
            done = done | found
            alive = alive & ~done.repeat_interleave(beam)
    adversarial = tokenizer.decode(best.cpu())
    return _result("hotflip", f"<= {budget} flipped characters", model, tokenizer, texts,
                   adversarial, y, edits, vectors)


def _probs(model, tokenizer, texts, y) -> list[float]:
    """The true-class probability of each text (one host read for the whole round)."""
    z = predict(model, tokenizer.encode(texts).to(y.device))
    return z.softmax(1).gather(1, y[:, None])[:, 0].tolist()


def _greedy_words(model, texts, y, tokenizer, candidates, max_words):
    """TextBugger's and TextFooler's search: rank the words of each text by how much deleting
    one lowers the true-class probability (the black-box importance of both papers), then, in
    that order, replace each by the candidate (``candidates(word, k, i) -> [word']`` for word i
    of text k) that lowers
    the probability most, stopping at a misclassified text or after `max_words` replacements.
    Returns the adversarial texts and the replacement counts."""
    words = [t.split() for t in texts]
    drops = [" ".join(w[:i] + w[i + 1:]) for w in words for i in range(len(w))]
    owner = [k for k, w in enumerate(words) for _ in w]
    p0 = _probs(model, tokenizer, texts, y)
    p_drop = _probs(model, tokenizer, drops, y[owner]) if drops else []
    order, at = [], 0
    for k, w in enumerate(words):
        order.append(sorted(range(len(w)), key=lambda i, at=at: (p_drop[at + i] - p0[k], i)))
        at += len(w)
    pred = predict(model, tokenizer.encode(texts).to(y.device)).argmax(1)
    active = (pred == y).tolist()
    edits, prob = [0] * len(texts), p0
    for rank in range(max((len(w) for w in words), default=0)):
        tries = [(k, order[k][rank], c) for k in range(len(words))
                 if active[k] and rank < len(words[k])
                 for c in candidates(words[k][order[k][rank]], k, order[k][rank])]
        if not tries:
            break
        texts_now = [" ".join(words[k][:i] + [c] + words[k][i + 1:]) for k, i, c in tries]
        p = _probs(model, tokenizer, texts_now, y[[k for k, *_ in tries]])
        best = {}
        for (k, i, c), q in zip(tries, p):
            if q < prob[k] and (k not in best or q < best[k][0]):
                best[k] = (q, i, c)
        for k, (q, i, c) in best.items():  # a slot may now hold two words ("we ak")
            words[k][i], prob[k], edits[k] = c, q, edits[k] + 1
            active[k] = edits[k] < max_words
        if best:  # a text is fooled once its class is not the top one
            fooled = ~correct(model, tokenizer.encode([" ".join(w) for w in words]).to(y.device), y)
            active = [a and not f for a, f in zip(active, fooled.tolist())]
    return [" ".join(w) for w in words], torch.tensor(edits)


def textbugger(model: nn.Module, texts: list[str], y: torch.Tensor, *, tokenizer,
               max_words: int = 3, bugs=("insert", "delete", "swap", "visual"),
               generator: torch.Generator | None = None,
               vectors: WordVectors | None = None) -> TextAttackResult:
    """TextBugger, black-box (Li, Ji, Du, Li and Wang, NDSS 2019, Algorithm 2): rank words by
    the drop of the true-class probability when each is deleted, C_w = p_y(x) - p_y(x \\ w),
    then bug the most important words in turn with the bug that lowers p_y most:

    - insert: a space inside the word ("weak" -> "we ak");
    - delete: a character other than the first and last ("terrible" -> "terible");
    - swap: two adjacent inner characters ("terrible" -> "terrbile");
    - visual: a look-alike ("terrible" -> "terrib1e"), Sub-C of the paper.

    Positions are drawn from `generator`. A word model sees a bugged word as the unknown id; a
    character model sees the typo. Function words are bugged too: "not" -> "nt" still reads as
    a negation to a person, but not to a word model. Constraint: at most `max_words` bugged
    words, one edit each
    (the paper's semantic-similarity filter is replaced by this budget; `vectors` adds the
    embedding cosine to the reported similarity).
    """
    _, y = _inputs(model, texts, y, tokenizer)
    check_positive(max_words, "max_words", integer=True)
    check_generator(generator)
    if isinstance(bugs, str) or not bugs or any(b not in ("insert", "delete", "swap", "visual")
                                                for b in bugs):
        raise ValueError(f"bugs must be a non-empty subset of ('insert', 'delete', 'swap', "
                         f"'visual'), got {bugs!r}")

    # one uniform per text, word and bug, drawn at once (one read, not one per query)
    longest = max(len(t.split()) for t in texts)
    u = torch.rand(len(texts), longest, 4, generator=generator,
                   device=generator.device if generator is not None else "cpu").tolist()

    def candidates(word, k, i):
        def at(kind: int, high: int) -> int:
            return min(int(u[k][i][kind] * high), high - 1)

        out, inner = [], len(word) - 2
        if "insert" in bugs and len(word) > 1:
            j = 1 + at(0, len(word) - 1)
            out.append(word[:j] + " " + word[j:])
        if "delete" in bugs and inner > 0:
            j = 1 + at(1, inner)
            out.append(word[:j] + word[j + 1:])
        if "swap" in bugs and inner > 1:
            j = 1 + at(2, inner - 1)
            out.append(word[:j] + word[j + 1] + word[j] + word[j + 2:])
        spots = [j for j, c in enumerate(word) if c in VISUAL]
        if "visual" in bugs and spots:
            j = spots[at(3, len(spots))]
            out.append(word[:j] + VISUAL[word[j]] + word[j + 1:])
        return out

    adversarial, edits = _greedy_words(model, texts, y, tokenizer, candidates, max_words)
    return _result("textbugger", f"<= {max_words} bugged words", model, tokenizer, texts,
                   adversarial, y, edits, vectors)


def synonym_attack(model: nn.Module, texts: list[str], y: torch.Tensor, *, tokenizer,
                   min_similarity: float = 0.5, max_words: int | None = None,
                   synonyms: dict | None = None,
                   vectors: WordVectors | None = None) -> TextAttackResult:
    """Synonym substitution, TextFooler-style (Jin, Jin, Zhou and Szolovits, AAAI 2020): rank
    words by deletion importance, then replace each in turn by the synonym that lowers the
    true-class probability most, among those whose embedding cosine with it is at least
    `min_similarity` (delta = 0.5 in the authors' code), until the prediction flips.

    `synonyms` maps a word to ``[(synonym, cosine), ...]`` (`text_data.synonym_table(vectors)`
    by default). Constraint: every substitute has cosine >= `min_similarity` with the word it
    replaces, and at most `max_words` words change (no limit if None).
    """
    _, y = _inputs(model, texts, y, tokenizer)
    check_in_range(min_similarity, "min_similarity", -1, 1)
    if max_words is not None:
        check_positive(max_words, "max_words", integer=True)
    if synonyms is None:
        synonyms = synonym_table(vectors)
    if not isinstance(synonyms, dict):
        raise TypeError(f"synonyms must be a dict word -> [(synonym, cosine)], got "
                        f"{type(synonyms).__name__}")

    def candidates(word, *_):
        return [s for s, c in synonyms.get(word, ()) if c >= min_similarity]

    limit = max(len(t.split()) for t in texts) if max_words is None else max_words
    adversarial, edits = _greedy_words(model, texts, y, tokenizer, candidates, limit)
    bound = f"cosine >= {min_similarity}" + ("" if max_words is None else f", <= {max_words} words")
    return _result("synonym", bound, model, tokenizer, texts, adversarial, y, edits, vectors)


# off-topic clauses (the film is never their subject), each polarity
DISTRACTORS = tuple(f"and the {thing} was {adj}" for thing in ("popcorn", "parking", "weather")
                    for adj in ("terrible", "awful", "boring", "great", "perfect", "wonderful"))


def add_sentence(model: nn.Module, texts: list[str], y: torch.Tensor, *, tokenizer,
                 distractors=DISTRACTORS, vectors: WordVectors | None = None) -> TextAttackResult:
    """A distracting sentence, after AddSent (Jia and Liang, EMNLP 2017): append to each text
    the off-topic clause of `distractors` ("and the popcorn was terrible") that lowers the
    true-class probability most. The clause says nothing about the film, so the review's label
    stands; a model that counts sentiment words anywhere is fooled. Constraint: the original
    text is kept verbatim, followed by exactly one clause from `distractors` (those too long
    for the tokenizer are skipped). One batch of queries, one read.
    """
    ids, y = _inputs(model, texts, y, tokenizer)
    right = correct(model, ids, y).tolist()  # a misclassified text is left as it is
    if isinstance(distractors, str) or not distractors or not all(
            isinstance(d, str) and d for d in distractors):
        raise TypeError("distractors must be a non-empty list of non-empty strings")
    tries = [(k, f"{t} {d}") for k, t in enumerate(texts) if right[k] for d in distractors
             if len(tokenizer.split(f"{t} {d}")) <= tokenizer.length]
    adversarial, edits = list(texts), torch.zeros(len(texts), dtype=torch.long)
    if tries:
        p = _probs(model, tokenizer, [t for _, t in tries], y[[k for k, _ in tries]])
        best = {}
        for (k, text), q in zip(tries, p):
            if k not in best or q < best[k][0]:
                best[k] = (q, text)
        for k, (_, text) in best.items():
            adversarial[k], edits[k] = text, 1
    return _result("add_sentence", "one off-topic clause appended", model, tokenizer, texts,
                   adversarial, y, edits, vectors)


def text_transfer(result: TextAttackResult, model: nn.Module, y: torch.Tensor, *,
                  tokenizer, only_success: bool = True) -> float:
    """Transfer rate of a text attack: among the examples `result` fooled (all examples if not
    `only_success`) that `model` classifies right in their original form, the share whose
    adversarial text `model` misclassifies (NaN when there is none)."""
    if not isinstance(result, TextAttackResult):
        raise TypeError(f"result must be a TextAttackResult, got {type(result).__name__}")
    check_bool(only_success, "only_success")
    _, y = _inputs(model, result.original, y, tokenizer)
    dev = y.device
    clean = correct(model, tokenizer.encode(result.original).to(dev), y)
    counted = clean & (result.success.to(dev) if only_success else True)
    fooled = ~correct(model, tokenizer.encode(result.adversarial).to(dev), y) & counted
    n = int(counted.sum())
    return float("nan") if n == 0 else int(fooled.sum()) / n
