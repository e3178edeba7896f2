"""The zoo's models beyond images (lesson 02d): their recipes, stored weights and loaders.

Each recipe names a modality's training function and its arguments (architecture, epochs, lr,
batch size, ...) and the generator of its training data; ``python -m robustlab.zoo build NAME``
trains it on the CPU with seed 0 (seconds each), writes its state dict under robustlab/weights/
and records file, sha256, seed, the data's seed, the CPU's arithmetic, recipe and test metric
(accuracy; exact match and F1 for the reader) in weights/manifest-beyond.json. That manifest
is kept apart from the image models' (weights/manifest.json), which the command line and the
image lessons read as the list of image classifiers. ``python -m robustlab.zoo verify``
re-measures every metric.

`load` returns a stored model, checked by `robustlab.models.checked_state` (sha256, then
``torch.load(weights_only=True)``); `stored_or_trained` is the lessons' entry point: the stored
model for the recipe's seed and epochs, a model trained by the recipe for any other.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ._checks import check_choice, check_seed
from .audio_data import clips
from .audio_models import AudioCNN, train_audio_model
from .checkpoint import without_torch_advice
from .graph_data import Graph, sbm_graph
from .graph_models import GCN, gcn_accuracy, train_gcn
from .models import checked_state, manifest, sha256
from .pointcloud_data import shapes
from .pointcloud_models import ARCHITECTURES as POINT_ARCHITECTURES
from .pointcloud_models import point_accuracy, train_point_model
from .reading_data import qa_set, reading_tokenizer
from .reading_models import SpanReader, answer, reading_scores, train_reader
from .text_data import CharTokenizer, WordTokenizer, sentiment_corpus
from .text_models import ARCHITECTURES as TEXT_ARCHITECTURES
from .text_models import text_accuracy, train_text_model
from .train import evaluate
from .zoo import same_metric, save_weights, write_manifest

__all__ = ["MANIFEST", "RECIPES", "build", "cpu_kernels", "load", "metrics", "stored_or_trained", "train",
           "verify"]

MANIFEST = "manifest-beyond.json"

# `kind` picks the training function; `data` is the generator of the training set, drawn with
# seed 0 except where `data_follows_seed` (the reader's questions and the GCN's graph are drawn
# from the model's own seed, as train_reader and lesson 02d draw them). The rest are the
# training function's arguments: the defaults of each module, written out.
RECIPES = {
    "sentiment-word-cnn": dict(kind="text", arch="word-cnn", epochs=8, lr=3e-3, batch_size=64,
                               data="text_data.sentiment_corpus"),
    "sentiment-word-gru": dict(kind="text", arch="word-gru", epochs=10, lr=3e-3, batch_size=64,
                               data="text_data.sentiment_corpus"),
    "sentiment-char-cnn": dict(kind="text", arch="char-cnn", epochs=8, lr=3e-3, batch_size=64,
                               data="text_data.sentiment_corpus"),
    "qa-reader": dict(kind="reader", epochs=6, n=1000, lr=3e-3, batch_size=64,
                      data="reading_data.qa_set", data_follows_seed=True),
    "sbm-gcn": dict(kind="graph", epochs=200, hidden=16, lr=0.01, weight_decay=5e-4, dropout=0.5,
                    data="graph_data.sbm_graph", data_follows_seed=True),
    "shapes-pointnet": dict(kind="points", arch="pointnet", epochs=8, lr=3e-3, batch_size=32,
                            data="pointcloud_data.shapes"),
    "shapes-dgcnn": dict(kind="points", arch="dgcnn", epochs=5, lr=3e-3, batch_size=32,
                         data="pointcloud_data.shapes"),
    "words-audio-cnn": dict(kind="audio", epochs=12, lr=3e-3, batch_size=32,
                            data="audio_data.clips"),
}
_NOT_ARGUMENTS = ("kind", "arch", "data", "data_follows_seed")

# what `train`, `load` and `stored_or_trained` return: the model, or the model and what it reads
Trained = nn.Module | tuple[nn.Module, WordTokenizer | CharTokenizer | Graph]


def _recipe(name: str) -> dict:
    return RECIPES[check_choice(name, tuple(RECIPES), "name")]


def _data_seed(recipe: dict, seed: int) -> int:
    return seed if recipe.get("data_follows_seed") else 0


def train(name: str, *, seed: int = 0, epochs: int | None = None,
          device: str | torch.device | None = None) -> Trained:
    """Train the zoo model `name` by its recipe, with `seed` and `epochs` (the recipe's when
    None), on `device` (the CPU by default). Returns what its modality's training function
    returns: ``(model, tokenizer)`` for the text models and the reader, ``(model, graph)`` for
    the GCN (its graph drawn by ``sbm_graph(seed=seed)``), the model alone otherwise.

    Arguments:
        name: a model of `RECIPES`.
        seed: the training seed (and the data's, for the reader and the GCN).
        epochs: training epochs; None for the recipe's.
        device: where the model is trained (the CPU by default).
    """
    recipe = _recipe(name)
    check_seed(seed)
    kw = {k: v for k, v in recipe.items() if k not in _NOT_ARGUMENTS}
    if epochs is not None:
        kw["epochs"] = epochs
    kind = recipe["kind"]
    if kind == "text":
        return train_text_model(recipe["arch"], seed=seed, device=device, **kw)
    if kind == "reader":
        return train_reader(seed=seed, device=device, **kw)
    if kind == "points":
        return train_point_model(recipe["arch"], seed=seed, device=device, **kw)
    if kind == "audio":
        return train_audio_model(seed=seed, device=device, **kw)
    graph = sbm_graph(seed=_data_seed(recipe, seed))
    graph = graph if device is None else graph.to(device)
    return train_gcn(graph, seed=seed, **kw), graph


def _untrained(name: str, data_seed: int):
    """The architecture of `name` with fresh weights, and its tokenizer or graph (or None)."""
    recipe = RECIPES[name]
    kind = recipe["kind"]
    if kind == "text":
        cls, make_tokenizer = TEXT_ARCHITECTURES[recipe["arch"]]
        tokenizer = make_tokenizer()
        return cls(tokenizer.vocab), tokenizer
    if kind == "reader":
        tokenizer = reading_tokenizer()
        return SpanReader(tokenizer.vocab), tokenizer
    if kind == "points":
        return POINT_ARCHITECTURES[recipe["arch"]](), None
    if kind == "audio":
        return AudioCNN(), None
    graph = sbm_graph(seed=data_seed)
    return GCN(graph.features.shape[1], graph.num_classes, recipe["hidden"]), graph


def load(name: str, *, device: str | torch.device = "cpu") -> Trained:
    """The stored zoo model `name` (one of `RECIPES`), in eval mode on `device`, returned as
    `train` returns it: ``(model, tokenizer)``, ``(model, graph)`` or the model.

    Its weights file must match the sha256 of weights/manifest-beyond.json and hold tensors only
    (``torch.load(weights_only=True)``); a missing or failing file raises a clear error.

    Arguments:
        name: a model of `RECIPES`, e.g. "sentiment-word-cnn", "sbm-gcn", "shapes-pointnet".
        device: where the model (and the GCN's graph) is put; the CPU by default, like
            `robustlab.models.pretrained`.
    """
    _recipe(name)
    entry = manifest(MANIFEST).get(name) or {}
    model, extra = _untrained(name, entry.get("data_seed", 0))
    model.load_state_dict(checked_state(name, MANIFEST))
    model.eval().to(device)
    if isinstance(extra, Graph):
        return model, extra.to(device)
    return model if extra is None else (model, extra)


def stored_or_trained(name: str, *, seed: int = 0, epochs: int | None = None,
                      device: str | torch.device | None = None) -> Trained:
    """The zoo model `name` as lesson 02d uses it: loaded from the zoo (`load`, no training)
    when `seed` is the stored model's and `epochs` is None or the stored model's, else trained
    by its recipe with this `seed` and `epochs` (`train`, seconds). The stored model is the
    recipe's run with its seed: training it again with the arithmetic that built it (the
    manifest's ``cpu``, see `cpu_kernels`) and one thread, as the lessons and tests run, gives
    the same weights; another CPU rounds differently and gives weights a little different.
    Returns as `train`.

    Arguments:
        name: a model of `RECIPES`.
        seed: the training seed (and the data's, for the reader and the GCN).
        epochs: training epochs; None for the recipe's.
        device: where the model goes (the CPU by default).
    """
    _recipe(name)
    check_seed(seed)
    entry = manifest(MANIFEST).get(name)
    if entry is not None and seed == entry.get("seed") and epochs in (None, entry.get("epochs")):
        return load(name, device="cpu" if device is None else device)
    return train(name, seed=seed, epochs=epochs, device=device)


def cpu_kernels() -> str:
    """The CPU arithmetic a model is trained with: torch's kernel level and the instruction
    sets oneDNN may use beyond it. Training by one recipe gives bit-equal weights only where
    this agrees with the manifest's ``cpu`` (and on one thread)."""
    extras = [check[4:-10] for check in ("_is_avx512_bf16_supported", "_is_vnni_supported",
                                         "_is_amx_tile_supported")
              if getattr(torch.cpu, check, lambda: False)()]
    return " ".join([torch.backends.cpu.get_cpu_capability(), *extras])


def metrics(name: str, trained: Trained) -> dict[str, float]:
    """The test metric of `trained` (as `train` or `load` return model `name`): the test
    accuracy; SQuAD's exact match and F1 on ``qa_set("test")`` for the reader."""
    kind = _recipe(name)["kind"]
    if kind == "text":
        texts, y = sentiment_corpus("test")
        return {"test_accuracy": text_accuracy(*trained, texts, y)}
    if kind == "reader":
        model, tokenizer = trained
        qa = qa_set("test")
        _, said = answer(model, [e.passage for e in qa], [e.question for e in qa],
                         tokenizer=tokenizer)
        scores = reading_scores(said, [e.answer for e in qa])
        return {"exact_match": scores["exact match"], "f1": scores["f1"]}
    if kind == "graph":
        return {"test_accuracy": gcn_accuracy(*trained)}
    if kind == "points":
        return {"test_accuracy": point_accuracy(trained, *shapes("test"))}
    return {"test_accuracy": evaluate(trained, clips("test"))}


def _model(trained: Trained) -> nn.Module:
    return trained[0] if isinstance(trained, tuple) else trained


def build(names, seed: int = 0) -> dict:
    """Train `names` by their recipes with `seed` on the CPU, write their weights and update
    weights/manifest-beyond.json; return its entries."""
    entries = manifest(MANIFEST)
    for name in names:
        t0 = time.time()
        recipe = _recipe(name)
        trained = train(name, seed=seed)
        blob = save_weights(_model(trained), name)
        scores = {k: round(v, 4) for k, v in metrics(name, trained).items()}
        entries[name] = {"file": f"{name}.pt", "sha256": sha256(blob), "seed": seed,
                         "data_seed": _data_seed(recipe, seed), "cpu": cpu_kernels(),
                         "torch": torch.__version__.split("+")[0], **scores, **recipe}
        print(f"{name}: {scores}, {len(blob) / 1024:.0f} KiB, {time.time() - t0:.0f} s",
              flush=True)
        write_manifest(entries, MANIFEST)
    return entries


def verify() -> bool:
    """Load every model of `RECIPES` (checksum checked) and compare its test metrics with the
    manifest's, each within `robustlab.zoo.ACCURACY_TOL`."""
    ok = True
    entries = manifest(MANIFEST)
    for name in sorted(RECIPES):
        try:
            scores = metrics(name, load(name))
            for key, value in scores.items():
                ok &= same_metric(name, key.replace("_", " "), value, entries[name][key])
        except Exception as e:
            ok = False
            print(f"{name}: FAILED: {without_torch_advice(e)}")
    return ok
