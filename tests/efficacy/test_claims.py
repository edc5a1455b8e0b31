"""The README's "met" claims, one slow test each, on the trained toy-sd (bars: docs/results.md#bars).

Each test runs the method's ``toy`` preset on one concept where the method's results section shows
the bar met on both protocol seeds, and checks the claim itself: UA at or above the bar with IRA
and CRA kept, judged on the UnlearnCanvas protocol at 2 images per grid prompt (the setting the
documented cells were measured with; ``the ``eval_opts`` fixture``). Every test also checks that the unmodified
toy-sd shows the concept (its UA is low), so an erasure that changes nothing fails.

Thresholds are the bars themselves; the margin lies in the choice of cell: each chosen cell's
documented UA is 100% on both seeds, and its documented IRA / CRA sit at least 5 points above the
retention bar, i.e. more than 2 binomial standard errors (about 2.5 points on 140-144 retain
images) above it. Where a claim is "met on average, at the bar" (geom_erasing) the margin is
stated at the test. Figures live in docs/results.md, never here.
"""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu

pytestmark = pytest.mark.slow

#: the unmodified toy-sd's UA on a concept it draws: 0% in the quickstart on both kinds; a style
#: loses a few images to the evaluator (up to 10% at 5 images per prompt), hence 0.2, far below
#: every bar (80-90%)
ORIGINAL_UA_MAX = 0.2

# (method, concept, UA bar, retention kept at). Bars from docs/results.md#bars: 90 / 85 / 85 for
# esd, concept_ablation, salun, selective_amnesia, uce, mace, sepme, spm; UA 80 for the other
# fine-tuning methods and espresso, whose bar names no retention figure: there "kept" is held at
# 80, which separates an erasure from the collapse that keeps forget_me_not below its bar
# (IRA / CRA 37-40%). Documented cells (UA / IRA / CRA, mean of seeds 0 and 1, or seed 0 where
# that is all there is), docs/results.md#fine-tuning-protocol and #closed-form-protocol:
CLAIMS = [
    # cross: 100 / 98 / 94 (ESD's objects moon / arrow have CRA 81 / 76: not chosen)
    ("esd", "cross", 0.90, 0.85),
    # cross: 100 / 97 / 96 (noisy, UA 73, and checkered, IRA 75, are its misses)
    ("concept_ablation", "cross", 0.90, 0.85),
    # cross, seed 0: 100 / 96.5 / 91.0; mean 100 / 97 / 92 (noisy, UA 60, is its miss)
    ("salun", "cross", 0.90, 0.85),
    # cross: 100 / 100 / 93
    ("selective_amnesia", "cross", 0.90, 0.85),
    # cross, seed 0, with today's bilevel update: 100 / 96.5 / 91.3 (noisy is its miss)
    ("erasediff", "cross", 0.80, 0.80),
    # cross: 100 / 92 / 96
    ("doco", "cross", 0.80, 0.80),
    # cross: 100 / 99 / 99 (seed 0: 100 / 99.3 / 99.0)
    ("all_but_one", "cross", 0.80, 0.80),
    # wavy: not one of UCE's misses (heart, 88%); protocol 98.4 / 98.3 / 99.1
    ("uce", "wavy", 0.90, 0.85),
    # wavy: not one of MACE's misses (striped seed 1, circle seed 0, square seed 0)
    ("mace", "wavy", 0.90, 0.85),
    # wavy: UA below 90 only for circle, IRA 81-85 only for striped, dotted, square, triangle
    ("sepme", "wavy", 0.90, 0.85),
    # wavy: 100 / 98 / 100
    ("spm", "wavy", 0.90, 0.85),
    # wavy, seed 0: 100 / 95.7 / 97.9 (blocked images count as erased / as wrong)
    ("espresso", "wavy", 0.80, 0.80),
]


@pytest.mark.parametrize(
    ("method", "concept", "ua_bar", "keep"), CLAIMS, ids=[f"{m}-{c}" for m, c, *_ in CLAIMS]
)
def test_toy_preset_meets_its_bar(toy, original_scores, eval_opts, method, concept, ua_bar, keep):
    base = original_scores(concept)
    assert base["ua"] <= ORIGINAL_UA_MAX, base  # the concept is there to be erased
    run = gu.erase(toy, method, concept, preset="toy", seed=0, samples=False)
    got = gu.evaluate(run.model, concept, **eval_opts)
    summary = {k: round(got[k], 3) for k in ("ua", "ira", "cra")}
    assert got["ua"] >= ua_bar, summary
    assert got["ira"] >= keep and got["cra"] >= keep, summary
    if method == "uce":  # UCE's bar includes its time: <= 10 s on 2 CPU cores (measured 0.13 s)
        assert run.efficiency["seconds"] <= 10.0


#: MACE's ten-concept call (docs/results.md#mace): five styles and five objects at once
TEN = ("flat", "striped", "dotted", "checkered", "wavy", "circle", "square", "triangle", "star",
       "heart")  # fmt: skip


def test_mace_ten_concepts_in_one_call_keep_retain_accuracy(toy, eval_opts):
    """Bar: retain accuracy >= 70 after erasing ten concepts in one call.

    The retain images are those carrying none of the ten (15 grid prompts); at the documented 2
    images per prompt they are 30, so one image is 3.3 points. Here 4 per prompt (60 images,
    the seeds of the documented run plus two more). Documented: IRA 76.7 / 85.0 (seeds 0 / 1),
    CRA 100 / 100; seed 1 is used, 15 points above the bar (about 2 standard errors at 60
    images). UA (76.2 / 69.2 documented) is checked against the original's, so a call that erases
    nothing fails even though it keeps everything.
    """
    task = gu.ErasureTask(TEN)
    ev = {**eval_opts, "n_per_prompt": 4}
    base = gu.evaluate(toy, task, **ev)
    run = gu.erase(toy, "mace", task, preset="toy", seed=1, samples=False)
    got = gu.evaluate(run.model, task, **ev)
    summary = {k: round(got[k], 3) for k in ("ua", "ira", "cra")}
    assert got["ira"] >= 0.70 and got["cra"] >= 0.70, summary
    # something was erased: the original's UA on these images is near 0, MACE's ~70%
    assert got["ua"] >= base["ua"] + 0.4, (summary, base["ua"])


def test_memattn_mitigation_moves_generations_off_the_memorized_images(
    memorizing_variant, memorized
):
    """Bar: mitigation lowers the similarity of generations to the memorized images while prompt
    fidelity stays >= 80% (docs/results.md#memattn; the memorizing variant, recipe seed 0).

    Documented (4 generations per memorized prompt, seeds 0-3): pixel RMSE to the nearest
    memorized image 0.096 unmitigated (100% of images within 0.12, i.e. near-copies) and 0.140
    with the toy preset (c1 = 6; 56% within 0.12); recipe seed 1: 0.094 -> 0.129 (97 -> 62%).
    Thresholds: the variant's own copies within 0.12 for >= 80% of its images (the concept to
    mitigate is there); the mitigated RMSE >= 0.02 above it (documented rises 0.035-0.044) and
    >= 20 points fewer near-copies (documented falls 35-44 points, on 32 images here); the
    paper's c1 = 1.25, which moves nothing on toy-sd (0.096), would fail both. Fidelity:
    documented 96 / 96% on the grid prompts.
    """
    prompts, refs = memorized
    model = gu.load_model(memorizing_variant)
    run = gu.erase(model, "memattn", gu.ErasureTask(tuple(prompts)), preset="toy", samples=False)

    def nearest_rmse(m) -> torch.Tensor:
        imgs = m.sample(prompts, n=4, seed=0)
        return (imgs[:, None] - refs[None]).pow(2).mean(dim=(2, 3, 4)).sqrt().min(1).values

    before, after = nearest_rmse(model), nearest_rmse(run.model)
    copies_before = (before < 0.12).float().mean().item()
    copies_after = (after < 0.12).float().mean().item()
    summary = (before.mean().item(), after.mean().item(), copies_before, copies_after)
    assert copies_before >= 0.8, summary  # the variant reproduces its memorized images
    assert after.mean() >= before.mean() + 0.02, summary
    assert copies_after <= copies_before - 0.2, summary
    fid = gu.evaluate(run.model, protocol="fidelity", n_per_prompt=1, seed=0)
    mean_fid = (fid["object_acc"] + fid["style_acc"] + fid["colour_acc"]) / 3
    assert mean_fid >= 0.8, fid


def test_geom_erasing_removes_the_implicit_watermark(watermark_variant):
    """Bar: watermark rate falls by >= 80% relative, prompt fidelity >= 80% (watermark variant).

    The claim is "met on average, at the bar": over ten documented runs the drop is 77.8-90.5%
    (mean 83.2%, eight runs >= 80%) and fidelity 0.80-0.85, one run's rate resting on 160 images
    (about +-5 points of drop). A single run cannot test an average, so this runs a documented
    passing run (erasure seed 3, evaluation seed 0: drop 89.2%, fidelity 0.823, the variant at
    46.3%) and holds it to the bars themselves: 9 points (about 2 standard errors) above the drop
    bar, 2.3 points above the fidelity bar. A negative prompt without the fine-tune removes 2.7%.
    """
    variant = gu.load_model(watermark_variant)
    ev = {"protocol": "watermark", "n_prompts": 80, "n_per_prompt": 2, "seed": 0}
    before = gu.evaluate(variant, **ev)
    assert before["watermark_rate"] >= 0.3, before  # the variant draws the watermark
    run = gu.erase(
        variant, "geom_erasing", gu.ErasureTask(target="a watermark"), preset="toy", seed=3,
        samples=False,
    )  # fmt: skip
    after = gu.evaluate(run.model, **ev)
    drop = 1 - after["watermark_rate"] / before["watermark_rate"]
    summary = (before["watermark_rate"], after["watermark_rate"], after["prompt_fidelity"])
    assert drop >= 0.80, summary
    assert after["prompt_fidelity"] >= 0.80, summary
