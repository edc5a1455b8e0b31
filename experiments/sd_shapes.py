"""Build SD-1.5's UNet and text encoder from configs (random weights) and time one pass of each.

Nothing is downloaded: the components come from ``genunlearn.testbed.sd_configs`` (the public
SD-1.5 config values) and the tokenizer is the offline one of ``build_tokenizer``. The script
encodes one prompt, runs one UNet denoiser pass on a batch-1 64x64x4 latent under
``torch.no_grad`` and prints parameter counts, seconds per pass and peak memory (process peak RSS
from ``/proc/self/status`` VmHWM; on CUDA also ``torch.cuda.max_memory_allocated``). It also counts
the UNet's ``attn2.to_k`` / ``attn2.to_v`` modules, the cross-attention projections that
closed-form erasure methods edit.

Usage::

    nice -n 19 python experiments/sd_shapes.py --size sd15
    python experiments/sd_shapes.py --size reduced --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def peak_rss_mib() -> float | None:
    """The process's peak resident set size in MiB (Linux VmHWM), or None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    from genunlearn.testbed.sd_configs import (
        build_text_encoder,
        build_tokenizer_for,
        build_unet,
        unet_config,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("sd15", "reduced"), default="sd15")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompt", default="a photo of a cat in the style of van gogh")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = ap.parse_args(argv)
    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    # Imported before the clock starts, so the build time is initialisation, not imports.
    from diffusers import UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401

    print(f"size={args.size} device={dev} torch_threads={torch.get_num_threads()}")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer_for(tmp)
    text_encoder = build_text_encoder(args.size, tok, seed=args.seed).to(dev)
    unet = build_unet(args.size, seed=args.seed).to(dev)
    print(f"build (random init, no download): {time.perf_counter() - t0:.1f} s")

    cfg = unet_config(args.size)
    names = [n for n, _ in unet.named_modules()]
    n_k = sum(n.endswith("attn2.to_k") for n in names)
    n_v = sum(n.endswith("attn2.to_v") for n in names)
    print(f"tokenizer: {len(tok)} tokens, model_max_length {tok.model_max_length}")
    print(f"text encoder params: {n_params(text_encoder):,}")
    print(f"unet params:         {n_params(unet):,}")
    print(f"unet cross-attention: attn2.to_k x{n_k}, attn2.to_v x{n_v}", end="")
    print(f" (e.g. {next(n for n in names if n.endswith('attn2.to_k'))})")
    if n_k == 0 or n_k != n_v:
        raise SystemExit("UNet lacks SD's attn2.to_k / attn2.to_v cross-attention modules")

    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ids = tok(
        [args.prompt], padding="max_length", max_length=tok.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids.to(dev)  # fmt: skip
    g = torch.Generator().manual_seed(args.seed)
    lat = torch.randn(1, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"], generator=g)
    lat = lat.to(dev)
    with torch.no_grad():
        sync(dev)
        t = time.perf_counter()
        cond = text_encoder(ids)[0]
        sync(dev)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        eps = unet(lat, torch.tensor([999], device=dev), encoder_hidden_states=cond).sample
        sync(dev)
        t_unet = time.perf_counter() - t
    print(f"encoder_hidden_states: {tuple(cond.shape)}")
    print(
        f"latent {tuple(lat.shape)} -> eps {tuple(eps.shape)}, finite={bool(eps.isfinite().all())}"
    )
    print(f"text encode (1 prompt): {t_enc:.3f} s")
    print(f"unet pass (batch 1):    {t_unet:.3f} s")
    rss = peak_rss_mib()
    print(f"peak RSS (VmHWM): {rss:.0f} MiB" if rss is not None else "peak RSS: unavailable")
    if dev.startswith("cuda"):
        print(f"cuda max_memory_allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
