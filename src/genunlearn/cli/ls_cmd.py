"""List methods, attacks, metrics, concepts (by kind) or models."""

from __future__ import annotations

HELP = "list methods, attacks, metrics or concepts"


def add_arguments(p) -> None:
    p.add_argument("what", choices=["methods", "attacks", "metrics", "concepts", "models"])
    p.add_argument("--kind", help="concept kind filter (object, style, colour)")
    p.add_argument("--model", default=None, help="model whose concepts to list (default: toy-sd)")


def run(args) -> int:
    from genunlearn import api, registry

    if args.what == "concepts":
        from genunlearn.data.world import World

        world = World.toycanvas() if args.model is None else api.world_of(args.model)
        kinds = [args.kind] if args.kind else list(world.heads)
        for k in kinds:
            names = [c.name for c in world.concepts(k)]
            print(f"{k} ({len(names)}): {', '.join(names)}")
        return 0
    if args.what == "models":
        print("toy-sd (built-in testbed); or any local diffusers Stable Diffusion directory")
        return 0
    kind = args.what[:-1]
    for name in registry.names(kind):
        e = registry.get(kind, name)
        print(f"{name:20s} {e.summary}")
    return 0
