"""The public API: thin functions over the registries, adapters and run directories."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genunlearn import registry, runs
from genunlearn.config import build_config, config_to_dict, is_seed, load_yaml
from genunlearn.models import load_model
from genunlearn.types import AttackResult, ErasureResult, ErasureTask, GenUnlearnError, Needs

__all__ = [
    "Run",
    "attack",
    "erase",
    "evaluate",
    "list_attacks",
    "list_concepts",
    "list_methods",
    "list_metrics",
    "load_evaluator",
    "load_model",
    "load_run",
]


def list_methods() -> list[str]:
    """Registered erasure methods."""
    return registry.names("method")


def list_attacks() -> list[str]:
    """Registered attacks."""
    return registry.names("attack")


def list_metrics() -> list[str]:
    """Registered metric families (the ``protocol`` names of :func:`evaluate`)."""
    return registry.names("metric")


def list_concepts(kind: str | None = None, model=None) -> list[str]:
    """Concept names of a model's world (default: ToyCanvas); ``kind`` filters by kind."""
    from genunlearn.data.world import World

    world = World.toycanvas() if model is None else world_of(model)
    return [c.name for c in world.concepts(kind)]


def load_evaluator(model="toy-sd"):
    """The world's evaluator of a model (default toy-sd): ``ev.predict(images)`` -> labels."""
    return _as_model(model).evaluator


def _as_model(model):
    """An adapter: ``model`` itself, or loaded when given as a name or path."""
    return load_model(model) if isinstance(model, (str, Path)) else model


def world_of(model):
    """The labelled world of ``model`` (an adapter, or a name or path to load).

    Raises:
        GenUnlearnError: the model has no world (e.g. a real Stable Diffusion checkpoint).
    """
    m = _as_model(model)
    if m.world is None:
        raise GenUnlearnError(f"model {m.model_id} has no labelled world")
    return m.world


def _task(task) -> ErasureTask:
    if isinstance(task, ErasureTask):
        return task
    if isinstance(task, (str, list, tuple)):
        return ErasureTask(task)
    raise GenUnlearnError(f"task must be an ErasureTask or a concept name, got {task!r}")


def resolve_task(model, task, check_text: bool = True) -> ErasureTask:
    """Check a task against the model's world.

    A single word on a model with a world must be one of its concepts (typos get the closest
    names); text with spaces is free text and is used as written. ``check_text=False`` (methods
    whose target is found by a detector, not named by a prompt) skips both checks.
    """
    task = _task(task)
    norm = {t.strip().lower() for t in task.targets}
    if task.anchor is not None and task.anchor.strip().lower() in norm:
        raise GenUnlearnError(
            f"the anchor {task.anchor!r} is also a target; the anchor must be a concept to map "
            "the target to, different from every target"
        )
    both = [r for r in task.retain or () if r.strip().lower() in norm]
    if both:
        raise GenUnlearnError(
            f"{both[0]!r} is both a target and a retain concept; a concept cannot be erased and "
            "preserved at once: remove it from retain"
        )
    if not check_text:
        return task
    world = getattr(model, "world", None)
    for t in task.targets:
        if world is not None and " " not in t.strip():
            world.concept(t)
        elif world is None or world.kind_of(t) is None:
            _warn_unknown_text(model, t)
    return task


def _warn_unknown_text(model, text: str) -> None:
    """Warn when free text shares nothing with what the model knows (its world's words, or
    any non-unknown token of its tokenizer): erasing it would change nothing meaningful."""
    import re
    import warnings

    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return
    pieces = tok.tokenize(text)
    world = getattr(model, "world", None)
    if world is not None:
        vocab = world.words() - {"a", "in"}
        known = [w for w in re.findall(r"[a-z]+", text.lower()) if w in vocab]
    else:
        known = [p for p in pieces if p != tok.unk_token]
    if not known:
        warnings.warn(
            f"target {text!r} tokenizes to {pieces} and none of it is a word model "
            f"{model.model_id} was trained on; the erasure will likely have no effect",
            stacklevel=3,
        )


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int in 0 .. 2**63 - 1 (what torch generators accept), else a clear error."""
    if not is_seed(seed):
        raise GenUnlearnError(f"{name} must be an integer in 0 .. 2**63-1, got {seed!r}")
    return seed


def _preset(model, preset: str | None) -> str:
    return preset or ("toy" if getattr(model, "world", None) is not None else "paper")


def resolve_config(
    model, kind: str, name: str, preset: str | None = None, config=None, **overrides
):
    """The configuration a method or attack would run with on ``model``.

    Layers, last wins: the config class's paper defaults, the preset ("toy" on a model with a
    world, else "paper"), ``config`` (a YAML file or dict), ``overrides``. ``erase`` and
    ``attack`` resolve their configuration through this; the benchmark fingerprints it.

    Args:
        model: an adapter (its world decides the default preset).
        kind: "method" or "attack".
        name: the registry name.

    Raises:
        GenUnlearnError: unknown name, preset or config key (naming the valid ones).
    """
    entry = registry.get(kind, name)
    return _entry_config(entry, _preset(model, preset), config, overrides)


def _entry_config(entry, preset: str, config, overrides: dict[str, Any]):
    if preset not in entry.presets:
        raise GenUnlearnError(
            f"{entry.name} has no preset {preset!r}; presets: {', '.join(sorted(entry.presets))}"
        )
    file_layer = load_yaml(config) if isinstance(config, (str, Path)) else (config or {})
    where = f"{entry.name} config"
    return build_config(entry.config, entry.presets[preset], file_layer, overrides, where=where)


def _check_requires(entry, model) -> None:
    missing = [c.value for c in entry.requires if c not in model.capabilities]
    if missing:
        raise GenUnlearnError(
            f"{entry.name} requires {', '.join(missing)}, which model {model.model_id} lacks"
        )


@dataclass
class Run:
    """The outcome of :func:`erase`: the erased model and, if saved, its run directory."""

    model: Any
    method: str
    task: ErasureTask
    config: dict[str, Any]
    result: ErasureResult
    efficiency: dict[str, float]
    path: Path | None = None
    record: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: str | Path, model=None, *, device=None, dtype=None) -> Run:
        """A finished run directory as a :class:`Run`, its model rebuilt by :func:`load_run`.

        The changed tensors are read from the artifact a second time (``load_run`` reads them
        once to apply them), so ``result.changed`` holds the saved values.

        Args:
            path: a complete run directory written by :func:`erase`.
            model: its base model, if already loaded; else ``device`` / ``dtype`` load it.
        """
        rec = runs.read_record(path)
        erased = load_run(path, model, device=device, dtype=dtype)
        sha = rec.get("sha256") or {}
        changed = runs.load_artifact(path, erased.base_hash, sha.get(runs.ARTIFACT))
        addon = None
        if rec.get("addon"):
            addon = runs.load_addon(path, erased.base_hash, sha.get(runs.ADDON))
        result = ErasureResult(
            changed, dict(rec.get("inference") or {}), dict(rec.get("info") or {}), addon
        )
        task = ErasureTask.from_dict(rec["task"])
        eff = dict(rec.get("efficiency") or {})
        return cls(erased, rec["method"], task, rec["config"], result, eff, Path(path), rec)

    def export(
        self,
        out_dir: str | Path,
        *,
        part: str = "pipeline",
        overwrite: bool = False,
        allow_inference: bool = False,
    ) -> Path:
        """Write the erased model as plain diffusers files that load without genunlearn.

        ``part="pipeline"``: a ``save_pretrained`` directory for
        ``diffusers.StableDiffusionPipeline.from_pretrained`` (no world, no evaluator);
        ``"unet"`` / ``"text_encoder"``: one ``.safetensors`` file of that component's full
        state dict. Weights are in the model's dtype. A run that acts at inference time (a
        negative prompt, sampling wrappers, output filters, add-ons) is refused, naming each
        part, unless ``allow_inference``: then the weights alone are written and the parts
        left out are listed beside them (see :func:`genunlearn.models.export.export_pipeline`).

        Args:
            out_dir: the pipeline directory, or the ``.safetensors`` file of a component.
            part: "pipeline", "unet" or "text_encoder".
            overwrite: replace an earlier genunlearn export there (never other files).
            allow_inference: write the weights even though inference-time parts are left out.

        Returns:
            The directory or file written.
        """
        from genunlearn.models.export import export_pipeline

        source = {"method": self.method, "task": self.task.to_dict()}
        if self.path is not None:
            source["run"] = str(self.path)
        return export_pipeline(
            self.model, out_dir, overwrite=overwrite, part=part,
            allow_inference=allow_inference, changed=list(self.result.changed), source=source,
        )  # fmt: skip


def erase(
    model,
    method: str,
    task,
    out_dir: str | Path | None = None,
    *,
    preset: str | None = None,
    seed: int = 0,
    config: str | Path | dict | None = None,
    overwrite: bool = False,
    samples: bool = True,
    **overrides,
) -> Run:
    """Erase ``task`` from a copy of ``model`` with ``method``; ``model`` itself is unchanged.

    The copy shares the weights the method does not change with ``model`` (one UNet in memory,
    see ``SDAdapter.copy(share=True)``): ``run.model`` is safe to sample, evaluate, attack and
    erase again, but write its weights in place only through ``run.model.copy()``.

    Args:
        model: an adapter from :func:`load_model`, or a name/path to load.
        method: registry name (see :func:`list_methods`).
        task: an :class:`ErasureTask` or a concept name.
        out_dir: new run directory to write (None: keep the run in memory only).
        preset: "toy" (default on toy worlds) or "paper" (default elsewhere).
        seed: seeds torch before the method runs.
        config: a YAML file or dict of config values (applied after the preset).
        overwrite: replace an existing run directory at ``out_dir``.
        samples: write a small PNG grid of target / retain samples into the run directory.
        **overrides: config values (applied last).
    """
    from genunlearn.core.efficiency import measure
    from genunlearn.core.finetune import training_options

    entry = registry.get("method", method)
    model = _as_model(model)
    task = resolve_task(model, task, check_text=Needs.DETECTOR not in entry.needs)
    preset = _preset(model, preset)
    cfg = resolve_config(model, "method", method, preset, config, **overrides)
    _check_requires(entry, model)
    check_seed(seed)
    d = runs.prepare_dir(out_dir, overwrite) if out_dir is not None else None
    work = model.copy(share=True)  # no second copy of the weights (see SDAdapter.copy)
    torch.manual_seed(seed)
    memory = getattr(model, "memory", {})
    opts = training_options(memory.get("optimizer_8bit", False), getattr(model, "dtype", None))
    with measure() as eff, opts as trained:
        try:
            result = entry.fn(work, task, cfg)
            if not isinstance(result, ErasureResult):
                raise TypeError(
                    f"method {method} returned {type(result).__name__}, not ErasureResult"
                )
            if not result.changed:
                result.changed = work.state_delta(model)
            # a diverged method is never saved, nor returned, as a finished erasure
            runs.check_finite(result.changed, f"{method}'s changed weights")
            if result.addon is not None:
                runs.check_finite(result.addon.tensors, f"{method}'s add-on module")
        except Exception as e:
            if d is not None:  # the directory stays marked incomplete and says why
                runs.mark_failed(d, f"{type(e).__name__}: {e}")
            raise
    try:  # outside the measured time: a check, not part of the method
        _probe_outputs(work, task)
    except GenUnlearnError as e:
        if d is not None:
            runs.mark_failed(d, f"{type(e).__name__}: {e}")
        raise
    eff = dict(eff)
    if trained:  # the training loops' own time, without set-up (anchor images, teachers)
        steps = sum(n for n, _ in trained)
        eff["train_steps"] = steps
        eff["seconds_per_step"] = sum(t for _, t in trained) / steps if steps else None
    run = Run(work, method, task, config_to_dict(cfg), result, eff)
    if d is not None:
        run.record = runs.write_run(
            d, method=method, preset=preset, config=run.config, task=task, seed=seed,
            model=model, result=result, efficiency=run.efficiency,
        )  # fmt: skip
        run.efficiency = run.record["efficiency"]
        if samples:
            _write_samples(work, task, d)
        runs.finish(d)
        run.path = d
    return run


def _probe_outputs(model, task: ErasureTask) -> None:
    """Generate one short-schedule image per target: the model's sample() refuses non-finite
    images, so weights that are finite but blow up in use (a huge learning rate) stop the run."""
    world = model.world
    prompts = [
        world.prompt(t) if world is not None and world.kind_of(t) else t for t in task.targets
    ]
    model.sample(prompts, n=1, steps=2, seed=0)


def _write_samples(model, task: ErasureTask, d: Path) -> None:
    from genunlearn.core.images import save_grid

    world = model.world
    if world is not None and all(world.kind_of(t) for t in task.targets):
        has, without = world.split(list(task.targets))
        prompts = [world.caption(lab) for lab in has[:4] + without[:4]]
    else:
        prompts = list(task.targets)
    save_grid(model.sample(prompts, n=2, seed=0), d / "samples.png", nrow=4)


def load_run(path: str | Path | list, model=None, *, device=None, dtype=None):
    """The erased model of a run directory: its base model with the saved artifact applied.

    Add-on runs (methods that attach a detachable module instead of changing weights, e.g.
    ``spm``) compose: ``load_run([run_a, run_b])`` attaches every run's add-on to one copy of the
    shared base model (at most one of the runs may change weights). Every run must have been
    made on the same base model; an add-on made for another base model is refused, naming both
    hashes.

    Args:
        path: a complete run directory written by :func:`erase`, or a list of them.
        model: the base model, if already loaded (must have the runs' base hash).
        device: where to load the base model when ``model`` is None (default: the first GPU,
            else the CPU).
        dtype: its weights' dtype when ``model`` is None (default: the dtype the run was made
            in, float32 for runs that do not record one).
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        raise GenUnlearnError("load_run needs at least one run directory")
    recs = [runs.read_record(p) for p in paths]
    if model is None:
        dtype = dtype or recs[0].get("dtype")
        model = load_model(recs[0]["base_model"], device=device, dtype=dtype)
    base = model
    for p, rec in zip(paths, recs, strict=True):
        if base.base_hash != rec["base_hash"]:
            raise GenUnlearnError(
                f"run {p} was made on a base model with hash {rec['base_hash'][:12]}…, not "
                f"{base.base_hash[:12]}… ({base.model_id})"
            )
    weighty = [str(p) for p, rec in zip(paths, recs, strict=True) if rec.get("changed_tensors")]
    if len(weighty) > 1:
        raise GenUnlearnError(
            f"runs {', '.join(weighty)} all change weights and cannot be combined (the later "
            "would overwrite the earlier); combine add-on runs such as spm"
        )
    out = base.copy()
    for p, rec in zip(paths, recs, strict=True):
        sha = rec.get("sha256") or {}
        out.apply_delta(runs.load_artifact(p, base.base_hash, sha.get(runs.ARTIFACT)))
    for p, rec in zip(paths, recs, strict=True):  # inference-time parts, by their method's hook
        sha = rec.get("sha256") or {}
        addon = (
            runs.load_addon(p, base.base_hash, sha.get(runs.ADDON)) if rec.get("addon") else None
        )
        install(out, rec["method"], rec.get("inference") or {}, addon)
    return out


def install(model, method: str, inference: dict, addon=None) -> None:
    """Put a run's inference-time state and add-on on ``model`` in place, with the method's own
    ``install`` hook (see :func:`genunlearn.registry.register_method`)."""
    entry = registry.get("method", method)
    if entry.install is not None:
        entry.install(model, inference, addon)
        return
    if addon is not None:
        raise GenUnlearnError(
            f"the run carries an add-on of kind {addon.kind!r}, but method {method!r} registers "
            "no install hook to put it on a model"
        )
    other = sorted(set(inference) - {"negative_prompt"})
    if other:  # nothing would read them: without a hook only the sampler's own key has meaning
        raise GenUnlearnError(
            f"the run's inference state has {other}, but method {method!r} registers no install "
            "hook; without one the state may only hold negative_prompt"
        )
    model.apply_inference(inference)


def evaluate(
    model, task=None, protocol: str = "unlearncanvas", *, config=None, **overrides
) -> dict[str, float]:
    """Score a model with a metric family (``list_metrics()``); returns a dict of figures."""
    entry = registry.get("metric", protocol)
    model = _as_model(model)
    file_layer = load_yaml(config) if isinstance(config, (str, Path)) else (config or {})
    cfg = build_config(entry.config, file_layer, overrides, where=f"{protocol} config")
    task = resolve_task(model, task) if task is not None else None
    return entry.fn(model, task, cfg)


def attack(
    model, name: str, task, *, original=None, preset: str | None = None, config=None, **overrides
) -> AttackResult:
    """Attack ``model`` to bring ``task``'s concept back; ``original``: the unerased model."""
    entry = registry.get("attack", name)
    model = _as_model(model)
    task = resolve_task(model, task)
    cfg = resolve_config(model, "attack", name, preset, config, **overrides)
    _check_requires(entry, model)
    torch.manual_seed(getattr(cfg, "seed", 0))
    return entry.fn(model, task, cfg, original=original)
