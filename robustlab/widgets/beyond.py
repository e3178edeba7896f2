"""Widgets of lesson 02d (attacks beyond images): type a sentence, pick a model and a text
attack, and see the words the attack changed and the model's confidence before and after."""

from __future__ import annotations

import difflib
import html
from collections.abc import Mapping

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display
from torch import nn

from .. import attacks
from .._model import model_device, predict
from ..text_data import CharTokenizer, WordVectors, synonym_table
from .figures import one_at_a_time

CLASS_NAMES = ("negative", "positive")
# the attacks a model can take: HotFlip flips characters, so it needs a character model;
# synonym substitution swaps whole words, which a character model sees as many edits
CHAR_ATTACKS = ("HotFlip", "TextBugger", "distracting clause")
WORD_ATTACKS = ("TextBugger", "synonyms", "distracting clause")
CHANGED, ADDED = "#f8c9c4", "#c8ecc9"  # backgrounds of a word taken out, of a word put in


def marked_edits(original: str, adversarial: str) -> tuple[str, str]:
    """HTML of both texts with the words that differ highlighted: in the original the words
    the attack removed or changed, in the adversarial text the words it put in their place
    (a word-level diff, `difflib.SequenceMatcher`)."""
    a, b = original.split(), adversarial.split()
    left, right = [], []
    for op, i, j, k, m in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old, new = " ".join(a[i:j]), " ".join(b[k:m])
        if op == "equal":
            left.append(html.escape(old))
            right.append(html.escape(new))
            continue
        if old:
            left.append(f'<span style="background:{CHANGED}">{html.escape(old)}</span>')
        if new:
            right.append(f'<span style="background:{ADDED}">{html.escape(new)}</span>')
    return " ".join(left), " ".join(right)


def _confidence_figure(p: torch.Tensor, p_adv: torch.Tensor):
    """Two stacked bars, the model's class probabilities on the original and the adversarial text."""
    fig, ax = plt.subplots(figsize=(6, 1.4))
    for row, probs in enumerate((p_adv, p)):
        left = 0.0
        for k, (name, colour) in enumerate(zip(CLASS_NAMES, ("C3", "C0"))):
            share = float(probs[k])
            ax.barh(row, share, left=left, color=colour, label=name if row == 0 else None)
            if share > 0.12:
                ax.text(left + share / 2, row, f"{name} {share:.0%}", ha="center", va="center",
                        color="white", fontsize=8)
            left += share
    ax.set(yticks=[0, 1], yticklabels=["adversarial", "original"], xlim=(0, 1), xticks=[])
    ax.tick_params(labelsize=8)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def _run(attack: str, model, text: str, y: torch.Tensor, tokenizer, budget: int,
         vectors, synonyms, seed: int):
    """One attack on one text, with `budget` as its edit budget."""
    if attack == "HotFlip":
        return attacks.hotflip(model, [text], y, tokenizer=tokenizer, budget=budget,
                               vectors=vectors)
    if attack == "TextBugger":
        return attacks.textbugger(model, [text], y, tokenizer=tokenizer, max_words=budget,
                                  generator=torch.Generator().manual_seed(seed), vectors=vectors)
    if attack == "synonyms":
        return attacks.synonym_attack(model, [text], y, tokenizer=tokenizer, max_words=budget,
                                      synonyms=synonyms, vectors=vectors)
    return attacks.add_sentence(model, [text], y, tokenizer=tokenizer, vectors=vectors)


def text_attack_explorer(models: Mapping[str, tuple[nn.Module, object]], *, sentence: str,
                         vectors: WordVectors | None = None, budget: int = 3,
                         seed: int = 0) -> W.VBox:
    """Type a sentence, pick a model and a text attack (`robustlab.attacks.text`), and see the
    adversarial sentence with its changed words highlighted and the model's class probabilities
    before and after (two stacked bars).

    `models` maps a name to ``(model, tokenizer)`` (`text_models.train_text_model`'s pair).
    The attack tries to change the model's own answer on the typed sentence (there is no true
    label for a sentence one types), within ``budget`` edits: flipped characters (HotFlip),
    bugged words (TextBugger) or substituted words (synonyms, cosine >= 0.5); the distracting
    clause is always one clause. The text is lower-cased, as the corpus is. Controls: ``.text``,
    ``.model``, ``.attack`` (its options follow the model: HotFlip only on a character model,
    synonyms only on a word model) and ``.budget``. ``.state`` holds model, attack, text,
    adversarial, answer, answer_after, confidence (in the first answer, before), confidence_after
    (in the first answer, after), fooled, edits, similarity, unknown (words the model does not
    know) and html (the marked texts shown above the probability bars), or ``error`` for a text
    the model cannot read.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict name -> (model, tokenizer)")
    if not isinstance(sentence, str) or not sentence.strip():
        raise ValueError("sentence must be a non-empty string")
    synonyms = synonym_table(vectors)
    names = list(models)

    def options(name: str) -> tuple[str, ...]:
        return CHAR_ATTACKS if isinstance(models[name][1], CharTokenizer) else WORD_ATTACKS

    text_w = W.Text(value=sentence, description="sentence", continuous_update=False,
                    layout=W.Layout(width="95%"))
    model_w = W.Dropdown(options=names, value=names[0], description="model")
    attack_w = W.Dropdown(options=options(names[0]), description="attack")
    budget_w = W.IntSlider(value=budget, min=1, max=6, description="edits ≤", continuous_update=False)
    out = W.Output()
    box = W.VBox([text_w, W.HBox([model_w, attack_w, budget_w]), out])
    box.text, box.model, box.attack, box.budget, box.out, box.state = (
        text_w, model_w, attack_w, budget_w, out, {})

    @one_at_a_time
    def update(_=None):
        name, attack, text = model_w.value, attack_w.value, " ".join(text_w.value.lower().split())
        model, tokenizer = models[name]
        try:
            if not text:
                raise ValueError("type a sentence")
            ids = tokenizer.encode([text])
        except ValueError as e:
            with out:
                out.clear_output(wait=True)
                display(HTML(f"<p><i>{html.escape(str(e))}</i></p>"))
            box.state = {"model": name, "attack": attack, "text": text, "error": str(e)}
            return
        dev = model_device(model) or torch.device("cpu")
        p = predict(model, ids.to(dev)).softmax(1)[0].cpu()
        y = p.argmax().view(1).to(dev)
        result = _run(attack, model, text, y, tokenizer, budget_w.value, vectors, synonyms, seed)
        adversarial = result.adversarial[0]
        ids_adv = tokenizer.encode([adversarial]).to(y.device)
        p_adv = predict(model, ids_adv).softmax(1)[0].cpu()
        first, after = int(y), int(p_adv.argmax())
        left, right = marked_edits(text, adversarial)
        unknown = [] if isinstance(tokenizer, CharTokenizer) else \
            [w for w in text.split() if w not in tokenizer.index]
        sim = {k: v[0] for k, v in result.similarity.items()}
        # <p> and <span> only: the static site cuts a widget's block at its first </div>
        text_html = (
            f"<p style='font-family:monospace;line-height:1.8'>"
            f"<b>original</b>: {left}<br><b>adversarial</b>: {right}<br>"
            f"{'<b>fooled</b>' if after != first else 'not fooled'} · {attack}: "
            f"{int(result.edits[0])} edit(s) · "
            + " · ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in sim.items())
            + (f"<br>unknown to this model: {html.escape(', '.join(unknown))}" if unknown else "")
            + "</p>")
        with out:
            out.clear_output(wait=True)
            display(HTML(text_html))
            fig = _confidence_figure(p, p_adv)
            plt.show()
            plt.close(fig)
        box.state = {"model": name, "attack": attack, "text": text, "adversarial": adversarial,
                     "answer": CLASS_NAMES[first], "answer_after": CLASS_NAMES[after],
                     "confidence": float(p[first]), "confidence_after": float(p_adv[first]),
                     "fooled": after != first, "edits": int(result.edits[0]),
                     "similarity": sim, "unknown": unknown, "html": text_html}

    def new_model(_=None):
        allowed = options(model_w.value)
        if tuple(attack_w.options) != allowed:
            keep = attack_w.value if attack_w.value in allowed else allowed[0]
            attack_w.unobserve(update, "value")
            attack_w.options, attack_w.value = allowed, keep
            attack_w.observe(update, "value")
        update()

    for w in (text_w, attack_w, budget_w):
        w.observe(update, "value")
    model_w.observe(new_model, "value")
    update()
    return box
