"""The recipes that train the built-in models (toy-sd, toy-clip, variants, evaluator, detector).

Nothing here is needed to use a model: ``models/`` loads what these recipes wrote. Only the CLI
and ``api`` import this package; it may use ``core``, ``models`` and ``data``.

- ``loop``: the one resumable training loop, atomic checkpoints read with ``weights_only=True``.
- ``toy_sd``: the toy-sd recipe (``genunlearn testbed train``): configs, stages, export.
- ``memorize`` / ``watermark``: the memorizing and watermark variants fine-tuned from toy-sd
  (``genunlearn testbed memorize`` / ``watermark``).
- ``evaluator``, ``toy_clip``, ``detector``: training of the world's evaluator, of toy-clip and of
  the watermark detector (``python -m genunlearn.testbed.detector``); ``augment``: the light
  augmentation they share.
- ``tokenizer``: the offline CLIP tokenizer files; ``sd_configs``: random-weight SD-1.5-shaped
  pipelines (full and reduced size) for tests and experiments.
- ``tiny``: a random-weight toy-sd in seconds, the fixture of the contract tests.
"""
