"""DeepConcolic's side of the comparison in benchmarks/stats_references.py: neuron coverage and
NC concolic testing by Sun, Wu, Ruan, Huang and Kwiatkowska's tool (ASE 2018), run on a
ReLU MLP whose weights robustlab wrote.

    /work/tfvenv/bin/python benchmarks/deepconcolic_side.py --checkout DIR --npz IN --out OUT

Run with the python of a separate TensorFlow environment (benchmarks/README.md builds it:
Python 3.8, TensorFlow 2.13 with its own Keras 2), never the project's .venv; stats_references.py
runs it in a subprocess. DIR is a checkout of TrustAI/DeepConcolic: its `deepconcolic/` folder
goes on sys.path and its modules run unmodified; nothing of it is copied here.

IN (written by stats_references.py) holds the MLP's layers in torch's layout (w0, b0, w1, ...:
(out, in) and (out,)), `inputs` (N, d) and robustlab's `logits` on them, the concolic `seeds`
(S, d), `checkpoints` (LP budgets, increasing), the filter `factor`, the distance lower bound
`lb_hard`, `lb_noise` and the numpy `seed`. The network is rebuilt as a Keras Sequential with
each hidden Dense followed by an Activation("relu") layer: DeepConcolic covers the layer before
such an Activation, i.e. the pre-activation z, and counts a neuron covered once z >= 0 (a Dense
with a fused relu would hand it relu(z) >= 0, every neuron covered by any input).

OUT (JSON): the largest |logit difference|, the coverage of `inputs` (per neuron, hidden layers
in order) and, per checkpoint, what the concolic engine reached from the seeds, with times.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def load_modules(checkout):
    """DeepConcolic's modules from the checkout (they import one another by bare name)."""
    sys.path.insert(0, os.path.join(checkout, "deepconcolic"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import bounds
    import nc
    import nc_pulp
    import pulp_norms
    import utils
    import utils_io
    return bounds, nc, nc_pulp, pulp_norms, utils, utils_io


def keras_mlp(keras, arrays):
    """The MLP of `arrays` (torch layout) as Dense / Activation("relu") layers, float32."""
    n = len([k for k in arrays.files if k.startswith("w")])
    layers = []
    for k in range(n):
        w = arrays[f"w{k}"]
        kw = {"input_shape": (w.shape[1],)} if k == 0 else {}
        layers.append(keras.layers.Dense(w.shape[0], **kw))
        if k < n - 1:
            layers.append(keras.layers.Activation("relu"))
    model = keras.Sequential(layers)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for k, layer in enumerate(dense):
        layer.set_weights([arrays[f"w{k}"].T, arrays[f"b{k}"]])
    return model


def engine_for(mods, model, reference, args):
    """A DeepConcolic NC engine with its LP analyzer under the L-inf norm (as its main.py
    builds one for `--criterion nc --norm linf`), set up and ready for test cases; `reference`
    is the data its set-up statistics (and its test oracle) read."""
    bounds, nc, nc_pulp, pulp_norms, utils, _ = mods
    data = utils.raw_datat(reference, None)
    test_object = utils.test_objectt(model, data, data)
    metric = pulp_norms.LInfPulp(factor=args["factor"], LB_hard=args["lb_hard"],
                                 LB_noise=args["lb_noise"])
    engine = nc.setup(test_object=test_object, setup_analyzer=nc_pulp.NcPulpAnalyzer,
                      input_metric=metric, input_bounds=bounds.UniformBounds(0.0, 1.0))
    # what Engine.run does on its first call, save drawing the initial tests at random from
    # the reference data with an unseeded generator: the caller adds the seeds itself
    engine.criterion.finalize_setup()
    engine._initialized = True
    return engine


def covered_mask(criterion):
    """Per neuron, hidden layers in order: covered (DeepConcolic's map holds True while not)."""
    return np.concatenate([~cl.map.reshape(-1) for cl in criterion.cover_layers])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", required=True)
    p.add_argument("--npz", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    mods = load_modules(a.checkout)
    utils, utils_io = mods[4], mods[5]
    keras = utils.keras
    arrays = np.load(a.npz)
    args = {k: float(arrays[k]) for k in ("factor", "lb_hard", "lb_noise")}
    model = keras_mlp(keras, arrays)
    inputs = arrays["inputs"].astype(np.float32)
    logits = model.predict(inputs, verbose=0)
    result = {"tensorflow": utils.tf.__version__, "python": sys.version.split()[0],
              "logits_max_diff": float(np.abs(logits - arrays["logits"]).max())}

    start = time.perf_counter()
    engine = engine_for(mods, model, inputs, args)
    engine.criterion.add_new_test_cases(list(inputs))
    cov = engine.criterion.coverage()
    result["coverage"] = {"covered": int(cov.c), "total": int(cov.total),
                          "mask": covered_mask(engine.criterion).tolist(),
                          "seconds": time.perf_counter() - start}

    np.random.seed(int(arrays["seed"]))  # the LP's distance lower bound is drawn with it
    seeds = arrays["seeds"].astype(np.float32)
    start = time.perf_counter()
    engine = engine_for(mods, model, inputs, args)
    engine.criterion.add_new_test_cases(list(seeds))
    cov = engine.criterion.coverage()
    runs = [{"budget": 0, "covered": int(cov.c), "total": int(cov.total), "tests": 0,
             "adversarial": 0, "seconds": time.perf_counter() - start}]
    with tempfile.TemporaryDirectory() as tmp:
        outdir = utils_io.OutputDir(tmp)
        for budget in arrays["checkpoints"].tolist():
            report = engine.run(outdir=outdir, initial_test_cases=0,
                                max_iterations=budget - runs[-1]["budget"])
            cov = engine.criterion.coverage()
            # a report counts the tests of its own run, adversarial ones included
            runs.append({"budget": budget, "covered": int(cov.c), "total": int(cov.total),
                         "tests": runs[-1]["tests"] + report.num_tests,
                         "adversarial": runs[-1]["adversarial"] + report.num_adversarials,
                         "seconds": time.perf_counter() - start})
    result["concolic"] = runs
    with open(a.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
