"""genunlearn: machine unlearning for generative image models.

Erase a concept from a model, attack the result to see whether it comes back, and compare methods
on one benchmark, on real Stable Diffusion checkpoints (diffusers) or on the built-in ToyCanvas
testbed (toy-sd) on a CPU.

This file is the facade: it re-exports the public names from where they live (api.py for
erasing, evaluating and attacking; bench/ for benchmark grids and sequential unlearning). No
module of the package imports it (see tests/unit/test_layers.py for the import order).
"""

from genunlearn.api import (
    Run,
    attack,
    erase,
    evaluate,
    list_attacks,
    list_concepts,
    list_methods,
    list_metrics,
    load_evaluator,
    load_model,
    load_run,
    resolve_config,
)
from genunlearn.bench.runner import run_benchmark
from genunlearn.bench.sequential import erase_sequence
from genunlearn.registry import register_attack, register_method, register_metric
from genunlearn.types import (
    AttackResult,
    Capability,
    Concept,
    ErasureResult,
    ErasureTask,
    GenUnlearnError,
    Needs,
)

__all__ = [
    "AttackResult",
    "Capability",
    "Concept",
    "ErasureResult",
    "ErasureTask",
    "GenUnlearnError",
    "Needs",
    "Run",
    "attack",
    "erase",
    "erase_sequence",
    "evaluate",
    "list_attacks",
    "list_concepts",
    "list_methods",
    "list_metrics",
    "load_evaluator",
    "load_model",
    "load_run",
    "register_attack",
    "register_method",
    "register_metric",
    "resolve_config",
    "run_benchmark",
]
