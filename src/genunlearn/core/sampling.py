"""Partial-trajectory sampling for training-time methods (ESD and others).

ESD trains on latents the *current* model produces for the concept prompt: run DDIM with
classifier-free guidance from noise for ``k`` of ``n`` steps and train at the timestep reached.
"""

from __future__ import annotations

import copy

import torch


@torch.no_grad()
def partial_trajectory(
    model,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    n_steps: int,
    k: int,
    guidance: float,
    noise: torch.Tensor,
):
    """Run ``k`` of ``n_steps`` DDIM steps from ``noise``; returns (x_t, t) at the step reached.

    Args:
        model: the adapter (its current weights are used).
        cond: prompt embeddings [B, L, D]; uncond: empty-prompt embeddings [B, L, D].
        n_steps: length of the full DDIM schedule.
        k: steps to run (0 returns the scaled noise at the first timestep).
        guidance: classifier-free guidance scale.
        noise: starting latents [B, C, H, W].
    """
    sched = copy.deepcopy(model.scheduler)
    sched.set_timesteps(n_steps)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps[:k]:
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        e_u, e_c = model.predict_noise(inp, t, torch.cat([uncond, cond])).chunk(2)
        x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
    return x, sched.timesteps[min(k, n_steps - 1)]
