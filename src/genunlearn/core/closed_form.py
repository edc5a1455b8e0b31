"""Closed-form least-squares edits of linear projections (UCE, MACE).

For a projection W (out x in), find W' minimising

    s_e * sum_i ||W' c_i - v_i||^2  +  s_p * sum_j ||W' c_j - W c_j||^2  +  lam * ||W' - W||_F^2

over edit inputs c_i with targets v_i and preserve inputs c_j. Setting the gradient to zero gives
W' = W + D with

    D A = s_e (V^T - W C_e^T) C_e,    A = lam I + s_e C_e^T C_e + s_p C_p^T C_p

(the same W' as the papers' (lam W + s_e V^T C_e + s_p W C_p^T C_p) A^-1), solved in float64.

Conditioning: A is symmetric positive semi-definite. When the inputs do not span the whole text
space (few prompts, lam = 0, or a text encoder whose final LayerNorm leaves a null direction), A
is singular or nearly so, and a plain solve returns arbitrary (typically huge) weights along the
directions no input determines. Rule: A is inverted as a pseudo-inverse with relative cutoff
eps (the convention of ``numpy.linalg.lstsq``'s rcond): eigen-directions of A whose eigenvalue is
below ``eps * max eigenvalue`` get no change, eps being the machine epsilon of the inputs' dtype
(float32: 1.2e-7), because the Gram matrix of rounded inputs carries rounding noise of that
relative size. W keeps its action along those directions (the least-squares solution that
changes W least); every other direction is solved exactly as published. Non-finite inputs and
negative weights are refused with a :class:`GenUnlearnError`.
"""

from __future__ import annotations

import math

import torch

from genunlearn.types import GenUnlearnError

# MS-COCO 2014 captions (train 414,113 + val 202,654): MACE's preserve cache sums over all of them.
COCO_CAPTIONS = 616_767

# General everyday captions (written for genunlearn, MS-COCO-like) that stand in for MACE's COCO
# preserve statistics on a model without a world.
GENERAL_CAPTIONS = (
    "a man riding a bicycle down a city street",
    "two dogs playing with a ball in the grass",
    "a plate of pasta with tomato sauce and basil",
    "a woman holding an umbrella in the rain",
    "a red double decker bus parked by the curb",
    "a cat sleeping on a wooden windowsill",
    "a group of people standing around a kitchen table",
    "a small boat floating on a calm lake",
    "a child flying a kite on a windy beach",
    "a bowl of fresh fruit on a counter",
    "an airplane taking off from a runway at dusk",
    "a living room with a grey couch and a lamp",
    "a man in a suit talking on a phone",
    "a train crossing a bridge over a river",
    "a pizza with mushrooms and olives on a tray",
    "a herd of cows grazing in a green field",
    "a bathroom with a white sink and a mirror",
    "a skateboarder doing a trick at a skate park",
    "a vase of yellow flowers on a dining table",
    "a giraffe eating leaves from a tall tree",
    "a busy market with fruit stalls and shoppers",
    "a laptop and a cup of coffee on a desk",
    "a tennis player swinging a racket on a clay court",
    "a snowy mountain behind a small wooden cabin",
    "a traffic light at an empty intersection at night",
    "a young girl reading a book under a tree",
    "a bunch of bananas hanging in a shop",
    "an old brick building with tall windows",
    "a horse standing next to a white fence",
    "a sandwich cut in half on a paper plate",
    "people waiting at a bus stop in the morning",
    "a surfer riding a large wave in the ocean",
    "a kitchen with stainless steel appliances",
    "a black and white photo of a street corner",
    "a teddy bear sitting on a bed with pillows",
    "an elephant walking along a dusty road",
    "a man cooking vegetables in a frying pan",
    "a clock tower in the middle of a town square",
    "a bird perched on a branch near a feeder",
    "a parking lot full of cars on a sunny day",
    "a woman jogging along a path in a park",
    "a birthday cake with candles on a table",
    "a fire hydrant on a sidewalk next to a tree",
    "a baseball player running toward first base",
    "a bedroom with a large window and a wooden floor",
    "a sheep standing on a rocky hillside",
    "a stop sign at the corner of a quiet road",
    "two people sharing a meal at a restaurant",
    "a motorcycle parked in front of a shop",
    "a close up of a glass of orange juice",
    "a couple walking on a sandy beach at sunset",
    "a bookshelf filled with colorful books",
    "a zebra drinking water at a watering hole",
    "a chef preparing food in a restaurant kitchen",
    "a boy kicking a soccer ball on a field",
    "a bench in a park covered with fallen leaves",
    "a computer monitor and a keyboard on a desk",
    "a boat docked at a wooden pier",
    "a woman taking a photo with her camera",
    "a bowl of soup with a spoon beside it",
    "a long line of taxis on a busy avenue",
    "a dog looking out of a car window",
    "a little house with a red roof and a garden",
    "a person skiing down a snowy slope",
    "a toilet next to a bathtub in a small bathroom",
    "an old man sitting on a park bench feeding pigeons",
    "a basket of bread rolls on a table",
    "a row of bicycles parked along a railing",
    "a view of a city skyline from a rooftop",
    "a girl holding a slice of watermelon",
    "a bear walking through a forest clearing",
    "a refrigerator with magnets on its door",
    "a group of friends playing frisbee in a park",
    "a cup of tea and a plate of cookies",
    "a highway with trucks under a cloudy sky",
    "a woman sitting at a desk writing a letter",
    "a police car parked on the side of the road",
    "a bowl of salad with tomatoes and cucumbers",
    "children playing on a playground slide",
    "a sailboat on the sea under a blue sky",
    "a man carrying a surfboard along the shore",
    "a hot dog with mustard on a bun",
    "a cozy fireplace in a wooden cabin",
    "a flock of birds flying over a field",
    "a street vendor selling hot food from a cart",
    "a tall glass building reflecting the clouds",
    "a person riding a horse along a trail",
    "a donut with pink frosting and sprinkles",
    "an empty classroom with desks and a blackboard",
    "a wooden table set for dinner with candles",
    "a boy brushing his teeth in front of a mirror",
    "a steam locomotive at an old railway station",
    "a woman walking her dog on a leash",
    "a bowl of rice with grilled chicken",
    "a lighthouse on a cliff above the sea",
    "a family having a picnic on a blanket",
    "a man reading a newspaper on a train",
    "a garden with roses and a stone path",
    "a truck loaded with boxes on a country road",
    "a television on a stand in a living room",
)


def _check(name: str, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise GenUnlearnError(
            f"closed-form edit: the {name} contain NaN or inf values; the model's text encoder or "
            "weights are not finite (check the model and the prompts)"
        )


def least_squares_edit(
    weight: torch.Tensor,
    edit_inputs: torch.Tensor,
    edit_targets: torch.Tensor,
    preserve_inputs: torch.Tensor | None = None,
    lam: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
    report: dict | None = None,
) -> torch.Tensor:
    """The edited weight W' (same dtype and shape as ``weight``); see the module docstring.

    Args:
        weight: W, [out, in].
        edit_inputs: C_e, [n, in] (rows are input vectors to remap).
        edit_targets: V, [n, out] (what W' should map each edit row to).
        preserve_inputs: C_p, [m, in] (rows whose outputs must not change), or None.
        lam: pull towards the old weight (>= 0).
        erase_scale: s_e (>= 0).
        preserve_scale: s_p (>= 0).
        report: if given, receives ``condition`` (largest / smallest eigenvalue of A, inf when
            singular), ``regularised`` (how many eigen-directions fell below the cutoff and kept W) and
            ``relative_change`` (||W' - W|| / ||W||).

    Raises:
        GenUnlearnError: non-finite inputs, a negative or non-finite lam or scale.
    """
    for name, val in (
        ("lam", lam),
        ("erase_scale", erase_scale),
        ("preserve_scale", preserve_scale),
    ):
        if not math.isfinite(val) or val < 0:
            raise GenUnlearnError(
                f"closed-form edit: {name} must be a finite number >= 0, got {val}"
            )
    inputs = [edit_inputs] + ([preserve_inputs] if preserve_inputs is not None else [])
    for name, x in (("weights", weight), ("edit inputs", edit_inputs),
                    ("edit targets", edit_targets), ("preserve inputs", preserve_inputs)):  # fmt: skip
        if x is not None:
            _check(name, x)
    w = weight.double()
    ce, v = edit_inputs.double(), edit_targets.double()
    d = w.shape[1]
    gram = erase_scale * ce.T @ ce
    if preserve_inputs is not None and len(preserve_inputs):
        cp = preserve_inputs.double()
        gram = gram + preserve_scale * cp.T @ cp
    a = lam * torch.eye(d, dtype=torch.float64) + gram
    # solve for the change D (not W'), so that a direction left out of the pseudo-inverse keeps
    # W's action there instead of being set to zero
    rhs = erase_scale * (v.T - w @ ce.T) @ ce
    evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    evals = evals.clamp_min(0)
    top = float(evals[-1])
    eps = max(torch.finfo(x.dtype).eps for x in [weight, *inputs] if x.is_floating_point())
    floor = eps * top
    cut = evals <= floor
    inv = torch.where(cut, torch.zeros_like(evals), 1 / evals.clamp_min(1e-300))
    delta = ((rhs @ evecs) * inv) @ evecs.T
    if report is not None:
        low = float(evals[0])
        report["condition"] = top / low if low > 0 else math.inf
        report["regularised"] = int(cut.sum())
        report["relative_change"] = float(delta.norm() / w.norm().clamp_min(1e-300))
    return (w + delta).to(weight.dtype)
