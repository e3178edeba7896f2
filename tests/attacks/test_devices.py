"""Every public attack on each device (`device` fixture): the result on the input's device,
identical twice with a seed on the CPU, equal to the CPU's on CUDA within each case's tolerance.

Inputs are 4 test digits and the pretrained digits CNN; each case runs a few steps or queries.
Random methods take a CPU generator, the mode in which draws are the same on every device.
"""

import functools

import pytest
import torch

from robustlab import attacks as A
from robustlab.defences import Defended, RandomResizePad, median_filter
from robustlab.text_data import char_tokenizer, sentiment_corpus, word_tokenizer, word_vectors
from robustlab.text_models import CharCNN, WordCNN
from robustlab.tokens import TokenCNN, token_task

from ..conftest import seeded
from ..devices import Case, check_case, cnn_setup


def setup(device):
    """A fresh copy of the CNN and 4 digits, on `device`."""
    return cnn_setup(device, 4)


def _tokens(device):
    torch.manual_seed(0)
    model = TokenCNN(vocab=32, dim=8).to(device)
    ids, y = token_task(4, seq_len=8, vocab=32)
    return model, ids.to(device), y.to(device)


_vectors = functools.cache(word_vectors)


def _text(device):
    """Untrained (seeded) char CNN and word CNN and 4 corpus sentences: the searches still run."""
    texts, y = sentiment_corpus("test")
    texts, y = texts[:4], y[:4].to(device)
    torch.manual_seed(0)
    chars, words = char_tokenizer(), word_tokenizer()
    char_model, word_model = CharCNN(chars.vocab).to(device), WordCNN(words.vocab).to(device)
    vectors = _vectors()
    flips = A.hotflip(char_model, texts, y, tokenizer=chars, budget=2, beam=2, vectors=vectors)
    bugs = A.textbugger(word_model, texts, y, tokenizer=words, generator=seeded())
    swaps = A.synonym_attack(word_model, texts, y, tokenizer=words, min_similarity=0.0)
    added = A.add_sentence(char_model, texts, y, tokenizer=chars)
    metrics = (A.edit_distance(texts[0], flips.adversarial[0]), A.word_overlap(texts[0], texts[1]),
               A.embedding_cosine(texts[0], texts[1], vectors), A.text_similarity(texts, texts))
    return (flips, bugs, swaps, added, metrics, A.text_transfer(swaps, char_model, y, tokenizer=chars,
                                                          only_success=False),
            A.hotflip_scores(char_model, chars.encode(texts).to(device), y))


def _oracle(device):
    model, x, y = setup(device)
    oracle = A.Oracle(model, budget=50)
    scores = oracle(x)
    return scores, oracle.queries


def _ledger(device):
    model, x, y = setup(device)
    ledger = A.QueryLedger(A.Oracle(model), x, y, max_queries=10)
    fooled = ledger.fooled(x, torch.arange(4), targeted=False)
    return fooled, ledger.used(), ledger.left()


def _budget_error(device):
    model, x, y = setup(device)
    oracle = A.Oracle(model, budget=1)
    scores = oracle(x)
    with pytest.raises(A.QueryBudgetError):  # raised from the device's counts as on the CPU's
        oracle(x)
    return scores


def _guap(device):
    model, x, y = setup(device)
    flow, v = A.guap(model, x, y, eps=0.1, steps=2, batch_size=4, generator=seeded())
    return flow, v, A.apply_guap(x, flow, v), A.guap_flow_norm(flow)


def _stadv(device):
    model, x, y = setup(device)
    x_adv, flow = A.stadv(model, x, y, steps=3, return_flow=True)
    return x_adv, flow, A.flow_warp(x, flow), A.flow_loss(flow)


def _patch(device):
    model, x, y = setup(device)
    p = A.patch(model, x, y, size=3, steps=2, generator=seeded())
    return p, A.apply_patch(x, p, generator=seeded()), A.patch_success(model, x, y, p, trials=2,
                                                                    generator=seeded())


# a black-box search keeps a candidate when its loss is lower: at a near tie, float sums in
# another order on the GPU may keep another one, and that image's path differs from there on;
# one image of the four may (its x_adv and its query count), the others must agree
SEARCH = dict(atol=1e-5, frac=0.3)

CASES = {
    "BPDA": Case(lambda d: (lambda m, x, y: A.BPDA(m, lambda t: median_filter(t, 3))(x))(*setup(d))),
    "EOT": Case(lambda d: (lambda m, x, y: A.EOT(Defended(m, RandomResizePad(generator=seeded())),
                                                  samples=3)(x))(*setup(d))),
    # the Oracle's ledger is host-side: a caller's queries are charged on the CPU (the attacks'
    # own counts stay on x's device, in their QueryLedger)
    "Oracle": Case(_oracle, host=("result[1]",)),
    "QueryLedger": Case(_ledger),
    "QueryBudgetError": Case(_budget_error),
    "apply_guap": Case(_guap, atol=1e-4, frac=0.05),
    "guap": Case(_guap, atol=1e-4, frac=0.05),
    "guap_flow_norm": Case(_guap, atol=1e-4, frac=0.05),
    "cw": Case(lambda d: A.cw(*setup(d), steps=5, binary_steps=1), atol=1e-4, frac=0.02),
    "deepfool": Case(lambda d: A.deepfool(*setup(d), steps=3), atol=1e-4, frac=0.02),
    "fgsm": Case(lambda d: A.fgsm(*setup(d), eps=0.1), atol=1e-5, frac=0.01),
    "flow_loss": Case(_stadv, atol=1e-4, frac=0.05),
    "flow_warp": Case(_stadv, atol=1e-4, frac=0.05),
    "stadv": Case(_stadv, atol=1e-4, frac=0.05),
    "fooling_rate": Case(lambda d: A.fooling_rate(*setup(d))),
    "hop_skip_jump": Case(lambda d: A.hop_skip_jump(*setup(d), max_queries=60, generator=seeded()),
                          **SEARCH),
    "lbfgs": Case(lambda d: A.lbfgs(*setup(d), targeted=False, search_steps=2, max_iter=5),
                  atol=1e-3, frac=0.05),
    "one_pixel": Case(lambda d: A.one_pixel(*setup(d), popsize=5, max_iter=2, generator=seeded()),
                      **SEARCH),
    "patch": Case(_patch, atol=1e-4, frac=0.05),
    "apply_patch": Case(_patch, atol=1e-4, frac=0.05),
    "patch_success": Case(_patch, atol=1e-4, frac=0.05),
    "pgd": Case(lambda d: A.pgd(*setup(d), eps=0.1, alpha=0.03, steps=3, generator=seeded()),
                atol=1e-5, frac=0.02),
    "single_pixel_search": Case(lambda d: A.single_pixel_search(*setup(d))),
    "corner_pixel_search": Case(lambda d: A.corner_pixel_search(*setup(d), max_queries=40,
                                                                round_size=8, generator=seeded())),
    "random_pixel_search": Case(lambda d: A.random_pixel_search(*setup(d), max_queries=40,
                                                                round_size=8, generator=seeded())),
    "square": Case(lambda d: A.square(*setup(d), eps=0.1, max_queries=30, generator=seeded()),
                   **SEARCH),
    "uap": Case(lambda d: A.uap(*setup(d), eps=0.1, max_passes=1, deepfool_steps=3,
                                generator=seeded()), atol=1e-4, frac=0.05),
    "zoo": Case(lambda d: A.zoo(*setup(d), coords_per_step=4, max_queries=40, generator=seeded()),
                **SEARCH),
    "embedding_pgd": Case(lambda d: A.embedding_pgd(*_tokens(d), eps=0.5, alpha=0.2, steps=2,
                                                    generator=seeded()), atol=1e-5, frac=0.02),
    "embedding_robust_accuracy": Case(lambda d: A.embedding_robust_accuracy(
        *_tokens(d), eps=0.5, alpha=0.2, steps=2, generator=seeded())),
    # decision-based attacks (rays.py, sign_opt.py): searches whose choices follow the labels (SEARCH)
    "rays": Case(lambda d: A.rays(*setup(d), max_queries=60, generator=seeded()), **SEARCH),
    "sign_opt": Case(lambda d: A.sign_opt(*setup(d), max_queries=100, k=20, generator=seeded()),
                     **SEARCH),
}
# text: discrete searches whose choices follow float comparisons (SEARCH); one run covers all
CASES.update(dict.fromkeys(["add_sentence", "hotflip", "hotflip_scores", "textbugger", "synonym_attack",
                            "text_transfer", "TextAttackResult", "edit_distance", "word_overlap",
                            "embedding_cosine", "text_similarity"],
                           Case(_text, atol=1e-4, frac=0.3)))


# reading (AddSent, robustlab/attacks/reading.py): a one-epoch reader trained once on the CPU
@functools.cache
def _reader():
    from robustlab.reading_models import train_reader

    return train_reader(seed=0, epochs=1, n=64)


def _reading(device):
    """AddSent, AddOneSent and the off-topic control on 4 test questions; their choices follow
    float comparisons (SEARCH-like tolerance)."""
    import copy

    from robustlab.reading_data import qa_set

    model, tokenizer = _reader()
    model = copy.deepcopy(model).to(device)
    test = qa_set("test", n=4)
    args = ([e.passage for e in test], [e.question for e in test], [e.answer for e in test])
    return (A.addsent(model, *args, tokenizer=tokenizer, candidates=3, generator=seeded()),
            A.addonesent(model, *args, tokenizer=tokenizer, generator=seeded()),
            A.add_off_topic(model, *args, tokenizer=tokenizer, generator=seeded()),
            A.question_to_statement(args[1][0], "x"))


CASES.update(dict.fromkeys(["addsent", "addonesent", "add_off_topic", "question_to_statement",
                            "ReadingAttackResult"], Case(_reading, atol=1e-4, frac=0.3)))

# graph attacks (robustlab/attacks/graph.py): a small block model and its GCN, trained once on
# the CPU and copied to the device; Nettack's greedy choices follow float comparisons (SEARCH)
@functools.cache
def _graph_and_gcn():
    from robustlab.graph_data import sbm_graph
    from robustlab.graph_models import train_gcn
    graph = sbm_graph(n_nodes=60, p_in=0.15, p_out=0.03, feature_dim=24, seed=0)
    return graph, train_gcn(graph, epochs=30)


def _graph(device):
    import copy
    graph, model = _graph_and_gcn()
    graph, model = graph.to(device), copy.deepcopy(model).to(device)
    attacked = A.pgd_topology(model, graph, budget=6, steps=3, samples=4, generator=seeded())
    return (A.nettack(model, graph, int(graph.test[0]), budget=3),
            A.nettack(model, graph, int(graph.test[1]), budget=2, direct=False), attacked,
            A.random_flips(graph, budget=5, generator=seeded()),
            A.poison_eval(model, graph, adjacency=attacked.adjacency, epochs=5),
            A.surrogate_logits(model, graph.features, graph.adjacency))


CASES.update(dict.fromkeys(["nettack", "pgd_topology", "poison_eval", "random_flips",
                            "surrogate_logits"], Case(_graph, **SEARCH)))

# audio (robustlab/attacks/audio.py): an untrained seeded AudioCNN and 4 synthetic clips; one run
# covers all. Success flags decide when a bound tightens, so a flag that flips on a ~0 margin
# changes that example's path: a share of elements may differ (as for the text searches).
def _audio(device):
    from robustlab.audio_data import clips
    from robustlab.audio_models import AudioCNN

    torch.manual_seed(0)
    model = AudioCNN().to(device)
    x, y = clips("test", n_per_class=1)
    x, target = x[::2].to(device), y[1::2].to(device)
    plain = A.audio_attack(model, x, target, steps=3)
    eot = A.audio_eot(model, x, target, steps=3, rooms=2, generator=seeded())
    universal = A.audio_universal(model, x, target, steps=3)
    rir = A.room_impulse(4, rt60=0.1, generator=seeded(), device=device)
    heard = A.simulate_room(x, rir, generator=seeded())
    rates = A.room_success_rate(model, x, target, rooms=2, generator=seeded())
    return plain, eot, universal, rir, heard, rates, A.db(x), A.relative_db(x / 10, x)


CASES.update(dict.fromkeys(["AudioAttackResult", "audio_attack", "audio_eot", "audio_universal", "db",
                            "relative_db", "room_impulse", "room_success_rate", "simulate_room"],
                           Case(_audio, atol=1e-4, frac=0.3)))


def _pointcloud(device):
    """Seeded untrained PointNet and DGCNN on 5 small shape clouds: every point-cloud attack."""
    from robustlab.pointcloud_data import shapes
    from robustlab.pointcloud_models import DGCNN, PointNet

    x, y = shapes("test", n_points=24, n_per_class=1)
    x, y = x.to(device), y.to(device)
    torch.manual_seed(0)
    pointnet, dgcnn = PointNet(widths=(16, 32)).to(device).eval(), DGCNN(k=4).to(device).eval()
    moved = A.perturb_points(dgcnn, x, y, eps=0.1, steps=3)
    return (moved, A.perturb_points(pointnet, x, y, eps=0.1, steps=3, bound="linf", chamfer_weight=1.0),
            A.add_points(pointnet, x, y, n_add=4, eps=0.1, steps=3),
            A.drop_points(dgcnn, x, y, n_drop=6, rounds=2), A.critical_points(pointnet, x),
            A.chamfer_distance(x, moved.adversarial), A.hausdorff_distance(x, moved.adversarial),
            A.pointcloud_transfer(moved, pointnet, y))


# robustlab/attacks/pointcloud.py: gradient steps and saliency rankings (SEARCH-like tolerance)
CASES.update(dict.fromkeys(["PointAttackResult", "add_points", "chamfer_distance", "critical_points",
                            "drop_points", "hausdorff_distance", "perturb_points", "pointcloud_transfer"],
                           Case(_pointcloud, atol=1e-4, frac=0.3)))


def _pgd_radii(device):
    """PGD with one radius and step per example (tensors on x's device), random start included."""
    model, x, y = setup(device)
    eps = torch.tensor([0.0, 0.05, 0.1, 0.3], device=device)
    return A.pgd(model, x, y, eps=eps, alpha=eps / 3 + 1e-3, steps=3, norm="l2", generator=seeded())


CASES["pgd (per-example radii)"] = Case(_pgd_radii, atol=1e-5, frac=0.02)

@pytest.mark.parametrize("name", sorted(CASES))
def test_attack_on_device(name, device):
    check_case(CASES[name], device)


# perceptually bounded PGD (attacks/perceptual.py): both bounds, the feature bound through the
# CNN's first two ReLUs; its own test below (CASES is parametrised above before this block)
def _perceptual(device):
    model, x, y = setup(device)
    return (A.perceptual_pgd(model, x, y, bound="ssim", min_ssim=0.9, steps=3, alpha=0.05),
            A.perceptual_pgd(model, x, y, bound="feature", max_distance=0.1, network=model,
                             layers=["1", "3"], steps=3, alpha=0.05))


CASES["perceptual_pgd"] = Case(_perceptual, atol=1e-4, frac=0.05)


def test_perceptual_pgd_on_device(device):
    check_case(CASES["perceptual_pgd"], device)


# physical patches (attacks/physical.py): the simulated camera on the 4 digits, and a 3-step EOT
# patch through it; its own test below (CASES is parametrised above before this block)
def _physical(device):
    model, x, y = setup(device)
    camera = A.Photographed(model, generator=seeded(), rotation=20.0, blur=1.0)
    return (A.physical_transforms(x, generator=seeded()), camera(x),
            A.patch(camera, x, y, size=3, steps=3, generator=seeded()))


CASES.update(dict.fromkeys(["Photographed", "physical_transforms"], Case(_physical, atol=1e-4)))


def test_physical_on_device(device):
    check_case(CASES["physical_transforms"], device)
