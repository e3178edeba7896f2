"""What the tests of the black-box attacks share: the contract every one of them keeps, and an
affine problem where their answers are known exactly."""

import torch

from robustlab.attacks import Oracle

from ..conftest import (
    CountingModel,
    assert_unchanged,
    check_conventions,
    linear_classifier,
    messy_model,
    snapshot,
)
from ..conftest import seeded as gen


class BlackBoxContract:
    """The tests every black-box attack must pass; a test module subclasses it, setting
    ``attack``, ``output`` (the Oracle output it needs) and ``settings``, a dict of name ->
    keyword arguments with a small ``max_queries`` that the attack must stop inside."""

    attack = None
    output = "scores"
    settings: dict = {}

    def pytest_generate_tests(self, metafunc):
        if "kw" in metafunc.fixturenames:
            metafunc.parametrize("kw", list(self.settings.values()), ids=list(self.settings))

    def test_conventions_and_determinism(self, batch, kw):
        x, y = batch
        x, y = x[:6], y[:6]
        a, qa = check_conventions(type(self).attack, x, y, generator=gen(1), **kw)
        b, qb = type(self).attack(messy_model(), x, y, generator=gen(1), **kw)
        assert torch.equal(a, b) and torch.equal(qa, qb), "a fixed generator must give the same output twice"

    def test_queries_are_counted_and_within_budget(self, digits_cnn, digits_test, kw):
        attack = type(self).attack
        x, y = digits_test
        x, y = x[:6], y[:6]
        model = CountingModel(digits_cnn)
        before = snapshot(model)
        adv, q = attack(model, x, y, generator=gen(), **kw)
        assert q.dtype == torch.long and q.shape == (6,)
        # the model also sees the rows of examples that had stopped, since loops keep their
        # batch whole between checkpoints to spare the GPU a sync (issue 16): never charged
        assert 0 < q.sum().item() <= model.images
        assert (q <= kw["max_queries"]).all() and (q > 0).all()
        assert_unchanged(model, before)
        # a caller's Oracle with a smaller budget caps the attack, which must not overrun it
        oracle = Oracle(model, output=self.output, budget=40)
        oracle(x[:1])  # example 0 has already used one query
        seen = model.images
        _, q = attack(oracle, x, y, generator=gen(), **kw)
        assert (oracle.queries <= 40).all() and q[0] <= 39
        assert torch.equal(q + torch.tensor([1, 0, 0, 0, 0, 0]), oracle.queries)
        assert q.sum().item() + oracle.discarded == model.images - seen, \
            "every image the model saw is either charged or counted as discarded"
        # an example with nothing left to spend is left alone, without an error
        spent = Oracle(model, output=oracle.output, budget=40)
        spent(x[:1].expand(40, -1, -1, -1), torch.zeros(40, dtype=torch.long))
        adv, q = attack(spent, x, y, generator=gen(), **kw)
        assert q[0] == 0 and torch.equal(adv[0], x[0]) and (q[1:] > 0).all()


def linear_problem(faces: bool = False):
    """A two-class affine model in float64 near x0, where everything is known: the attack loss
    log F_y - log F_o = z_y - z_o = f0 + u . (x - x0) is affine, the closest boundary point is
    f0 / ||u||_2 away in L2 and f0 / ||u||_1 in L-inf, and (without `faces`) every such point
    lies inside [0, 1]. With `faces`, three rows of x0 sit on the faces of the box."""
    model = linear_classifier(k=2).double()
    w = model[1].weight.detach()
    x0 = 0.5 + 0.05 * torch.rand(8, 1, 8, 8, generator=gen(3), dtype=torch.float64)
    if faces:
        x0[..., :2, :], x0[..., 7, :] = 0.0, 1.0
    z = model(x0).detach()
    y = z.argmax(1)
    u = (w[y] - w[1 - y]).view_as(x0)
    f0 = z.gather(1, y[:, None])[:, 0] - z.gather(1, 1 - y[:, None])[:, 0]
    return model, x0, y, u, f0
