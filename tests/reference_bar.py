"""An independent, minimal, plain-PyTorch reference of BAR written from the spec text only (docs/method.md §2.3-2.4,
§3, §4, §8.2-8.3, §10).

It reads state dicts in the AUTHORS' key layout (`cls_token`, `blocks.i.attn.qkv.weight`, `lm_head.transformer.j.*`,
`quantize.*`, `decoder.*` ...) and deliberately imports nothing from `bar_hf`: it is the yardstick that
`tests/test_reference_parity.py` holds `bar_hf` against. The code favours obviously-correct loops (per head, per
sample, per block) over speed; it is only ever run on tiny models.

Conventions (spec notation): `P = 1 + R` prefix slots (cls + R class copies), `N` AR tokens of `k` bits on a
`(H'/p) x (W'/p)` grid, image slot `P + i` holds the token generated at step `i` (spatial cell `o_i`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MASK = 2  # row 2 of every 3-row bit table: [MASK]


# ---------------------------------------------------------------------------------------------------- configs
@dataclass
class RefGenConfig:
    """What the generator tensors cannot reveal. Widths, depth, heads (D / QK-norm width) come from the tensors."""

    latent_height: int
    latent_width: int
    num_bits: int
    patch_size: int
    num_classes: int
    num_class_tokens: int
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def grid(self) -> tuple[int, int]:
        return self.latent_height // self.patch_size, self.latent_width // self.patch_size

    @property
    def num_steps(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def bits_per_step(self) -> int:
        return self.num_bits * self.patch_size * self.patch_size

    @property
    def prefix(self) -> int:
        return 1 + self.num_class_tokens


@dataclass
class RefTokConfig:
    """Tokenizer decoder facts the tensors cannot reveal (head count, pixel patch size, grid)."""

    grid_height: int
    grid_width: int
    patch_size: int
    num_heads: int
    ln_eps: float = 1e-5


# ---------------------------------------------------------------------------------------------------- primitives
def _linear(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    out = torch.matmul(x, sd[name + ".weight"].t())
    bias = sd.get(name + ".bias")
    return out if bias is None else out + bias


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32, learnable weight applied (in float32) before casting back (§3.6)."""
    xf = x.float()
    normed = xf / torch.sqrt((xf * xf).mean(dim=-1, keepdim=True) + eps)
    return (normed * weight.float()).to(x.dtype)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, additive_mask=None) -> torch.Tensor:
    """One head: softmax(q k^T / sqrt(d) + mask) v with the default SDPA scale."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if additive_mask is not None:
        scores = scores + additive_mask
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return torch.matmul(weights, v)


# ---------------------------------------------------------------------------------------------------- bits layout
def reference_patchify(bits_raster: torch.Tensor, cfg: RefGenConfig) -> torch.Tensor:
    """§3.2: (B, H'W', t) raster tokens → (B, N, p·p·t) AR tokens; blocks raster, bits (row-in-block, col, bit)."""
    p, (gh, gw), width = cfg.patch_size, cfg.grid, cfg.latent_width
    tokens = []
    for br in range(gh):
        for bc in range(gw):
            parts = []
            for r in range(p):
                for c in range(p):
                    parts.append(bits_raster[:, (br * p + r) * width + bc * p + c])
            tokens.append(torch.cat(parts, dim=-1))
    return torch.stack(tokens, dim=1)


def reference_unpatchify(ar_bits: torch.Tensor, cfg: RefGenConfig) -> torch.Tensor:
    """Inverse of [`reference_patchify`]: (B, N, p·p·t) → (B, H'W', t)."""
    p, (gh, gw), t = cfg.patch_size, cfg.grid, cfg.num_bits
    out = ar_bits.new_zeros(ar_bits.shape[0], cfg.latent_height * cfg.latent_width, t)
    for n in range(gh * gw):
        br, bc = divmod(n, gw)
        for r in range(p):
            for c in range(p):
                offset = (r * p + c) * t
                out[:, (br * p + r) * cfg.latent_width + bc * p + c] = ar_bits[:, n, offset : offset + t]
    return out


# ---------------------------------------------------------------------------------------------------- RoPE
def reference_rope_table(cfg: RefGenConfig, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.5.3: (P + N, head_dim) cos/sin tables: P identity rows, then grid cells in raster order.

    EVA construction: per-axis width d = head_dim / 2, frequencies theta^(-2j/d) for j < d/2, each repeated for an
    interleaved channel pair; positions arange(n) / n * n (float32); row half first, column half second.
    """
    d = head_dim // 2
    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    gh, gw = cfg.grid
    rows_pos = torch.arange(gh).float() / gh * gh
    cols_pos = torch.arange(gw).float() / gw * gw
    row_angles = torch.repeat_interleave(rows_pos[:, None] * freqs[None, :], 2, dim=-1)  # (gh, d)
    col_angles = torch.repeat_interleave(cols_pos[:, None] * freqs[None, :], 2, dim=-1)  # (gw, d)
    cells = []
    for r in range(gh):
        for c in range(gw):
            cells.append(torch.cat([row_angles[r], col_angles[c]]))
    angles = torch.stack(cells)  # (N, head_dim)
    cos = torch.cat([torch.ones(cfg.prefix, head_dim), angles.cos()])
    sin = torch.cat([torch.zeros(cfg.prefix, head_dim), angles.sin()])
    return cos, sin


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved pairs as complex numbers: (x0 + i x1)(cos + i sin) == x·cos + rot(x)·sin, rot(x0, x1) = (-x1, x0)."""
    shape = x.shape
    xc = torch.view_as_complex(x.float().reshape(*shape[:-1], shape[-1] // 2, 2).contiguous())
    rc = torch.complex(cos[..., 0::2].float(), sin[..., 0::2].float())
    return torch.view_as_real(xc * rc).reshape(shape).to(x.dtype)


# ---------------------------------------------------------------------------------------------------- backbone
def _slot_indices(cfg: RefGenConfig, order: list[int], length: int) -> tuple[list[int], list[int]]:
    """Per slot: 'current' row (own position) and 'target' row (next position), used by pos tables and RoPE."""
    P, N = cfg.prefix, cfg.num_steps
    current, target = [], []
    for j in range(length):
        if j < P:
            current.append(j)
            target.append(P + order[0])
        else:
            i = j - P
            current.append(P + order[i])
            target.append(P + order[i + 1] if i < N - 1 else P + order[N - 1])
    return current, target


def _backbone(sd: dict, cfg: RefGenConfig, ordered: torch.Tensor, class_ids: torch.Tensor, orders: torch.Tensor):
    """Full causal forward (no cache) over `P + n` slots; returns conditions for slots P-1 … P-1+min(n, N-1)."""
    P, N = cfg.prefix, cfg.num_steps
    batch, n = ordered.shape[0], ordered.shape[1]
    L = P + n
    D = sd["cls_token"].shape[-1]
    head_dim = sd["blocks.0.attn.q_norm.weight"].numel()
    heads = D // head_dim
    depth = len({key.split(".")[1] for key in sd if key.startswith("blocks.")})
    eps = cfg.rms_eps

    # §3.3 inputs: per-bit 3-row table, concatenated, input_merge; class row c + 3 (null id == num_classes → row
    # num_classes + 3)
    y = sd["embeddings.weight"][class_ids.long() + 3]  # (B, D)
    bit_table = sd["input_embeddings.weight"]
    rows = []
    for b in range(batch):
        seq = [sd["cls_token"][0, 0]] + [y[b]] * cfg.num_class_tokens
        for i in range(n):
            per_bit = [bit_table[int(v)] for v in ordered[b, i]]
            seq.append(_linear(torch.cat(per_bit), sd, "input_merge"))
        rows.append(torch.stack(seq))
    x = torch.stack(rows)  # (B, L, D)

    # §3.5.1-2 absolute + target-aware position embeddings; §3.5.4 AdaLN vectors by slot; §3.5.3 RoPE rows
    cos_table, sin_table = reference_rope_table(cfg, head_dim)
    cur_cos, cur_sin, tgt_cos, tgt_sin = [], [], [], []
    for b in range(batch):
        order = [int(v) for v in orders[b]]
        current, target = _slot_indices(cfg, order, L)
        x[b] = x[b] + sd["pos_embed"][0, current] + sd["target_aware_pos_embed"][0, target]
        cur_cos.append(cos_table[current])
        cur_sin.append(sin_table[current])
        tgt_cos.append(cos_table[target])
        tgt_sin.append(sin_table[target])
    cur_cos, cur_sin = torch.stack(cur_cos), torch.stack(cur_sin)
    tgt_cos, tgt_sin = torch.stack(tgt_cos), torch.stack(tgt_sin)
    ada = y[:, None, :] + sd["timesteps_embeddings"][0, :L][None]  # (B, L, D)
    causal = torch.zeros(L, L)
    for r in range(L):
        causal[r, r + 1 :] = float("-inf")

    for layer in range(depth):
        pre = f"blocks.{layer}."
        mod = _linear(_silu(ada), sd, pre + "adaLN_modulation.1")
        sh1, sc1, g1, sh2, sc2, g2 = (mod[..., c * D : (c + 1) * D] for c in range(6))

        h = _rms_norm(x, sd[pre + "norm1.weight"], eps) * (1 + sc1) + sh1
        qkv = _linear(h, sd, pre + "attn.qkv")
        head_outputs = []
        for hh in range(heads):
            q = qkv[..., hh * head_dim : (hh + 1) * head_dim]
            k = qkv[..., D + hh * head_dim : D + (hh + 1) * head_dim]
            v = qkv[..., 2 * D + hh * head_dim : 2 * D + (hh + 1) * head_dim]
            q = _rms_norm(q, sd[pre + "attn.q_norm.weight"], eps)
            k = _rms_norm(k, sd[pre + "attn.k_norm.weight"], eps)
            if hh < heads // 2:
                q = _rotate(q, cur_cos, cur_sin)
            else:  # second half of the query heads: target-aware RoPE
                q = _rotate(q, tgt_cos, tgt_sin)
            k = _rotate(k, cur_cos, cur_sin)
            head_outputs.append(_softmax_attention(q, k, v, causal))
        attn = _linear(torch.cat(head_outputs, dim=-1), sd, pre + "attn.proj")
        x = x + g1 * attn

        h = _rms_norm(x, sd[pre + "norm2.weight"], eps) * (1 + sc2) + sh2
        ab = _linear(h, sd, pre + "mlp.w12")
        F_ = ab.shape[-1] // 2
        x = x + g2 * _linear(_silu(ab[..., :F_]) * ab[..., F_:], sd, pre + "mlp.w3")

    m = min(n + 1, N)
    out = _rms_norm(x[:, P - 1 : P - 1 + m], sd["norm.weight"], eps)
    return _linear(out, sd, "latent_condition_proj")


def reference_conditions(
    sd: dict, cfg: RefGenConfig, bits_raster: torch.Tensor, class_ids: torch.Tensor, orders: torch.Tensor
) -> torch.Tensor:
    """§3.3-3.6 teacher-forced forward: raster tokenizer bits (B, H'W', t) → conditions (B, N, W_h), generation order.

    `conditions[:, i]` predicts AR token `orders[:, i]`.
    """
    ar = reference_patchify(bits_raster, cfg)
    ordered = torch.stack([ar[b, orders[b].long()] for b in range(ar.shape[0])])
    return _backbone(sd, cfg, ordered, class_ids, orders)


# ---------------------------------------------------------------------------------------------------- MBM head
def reference_head_logits(sd: dict, cfg: RefGenConfig, states: torch.Tensor, mask_ratio, z: torch.Tensor):
    """§4.1: bit states (M, k) in {0,1,2}, mask ratio (scalar or (M,)), conditions (M, W_h) → logits (M, k, 2)."""
    eps = cfg.rms_eps
    M, k = states.shape
    ratio = torch.as_tensor(mask_ratio, dtype=torch.float32).expand(M)
    table = sd["lm_head.input_embed.weight"]
    e = torch.stack([torch.cat([table[int(v)] for v in states[row]]) for row in range(M)])
    x = _rms_norm(_linear(e, sd, "lm_head.input_proj"), sd["lm_head.ln_pre.weight"], eps)

    W = sd["lm_head.t_embedder.W"].float()
    angle = 2 * math.pi * ratio[:, None] * W[None, :]
    phi = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
    tau = _linear(_silu(_linear(phi, sd, "lm_head.t_embedder.mlp.0")), sd, "lm_head.t_embedder.mlp.2")
    s = _silu(tau + z)

    width = x.shape[-1]
    j = 0
    while f"lm_head.transformer.{j}.in_ln.weight" in sd:
        pre = f"lm_head.transformer.{j}."
        mod = _linear(_silu(s), sd, pre + "adaLN_modulation.1")
        shift, scale, gate = mod[:, :width], mod[:, width : 2 * width], mod[:, 2 * width :]
        h = _rms_norm(x, sd[pre + "in_ln.weight"], eps) * (1 + scale) + shift
        ab = _linear(h, sd, pre + "mlp.w12")
        F_ = ab.shape[-1] // 2
        x = x + gate * _linear(_silu(ab[:, :F_]) * ab[:, F_:], sd, pre + "mlp.w3")
        j += 1
    mod = _linear(_silu(s), sd, "lm_head.adaln_before_head.adaLN_modulation.1")
    scale, shift = mod[:, :width], mod[:, width:]  # NOTE: (scale, shift)
    x = _rms_norm(x, sd["lm_head.adaln_before_head.norm_final.weight"], eps) * (1 + scale) + shift
    return _linear(x, sd, "lm_head.output_embed").reshape(M, k, 2)


# ---------------------------------------------------------------------------------------------------- sampling
def reference_sample_token(
    sd: dict,
    cfg: RefGenConfig,
    z_cond: torch.Tensor,
    z_uncond: torch.Tensor | None,
    weight: float,
    allocation: list[int],
    stats: dict | None = None,
) -> torch.Tensor:
    """§4.3 at temperature 0 (deterministic): iterative unmasking with allocation; CFG on logits with `weight`.

    `stats` (if given) collects `min_margin`, the smallest gap behind any discrete decision (value choice, re-mask
    cut), i.e. how far float noise is from flipping a bit, and `logits`, the guided logits of every head step.
    """
    k = cfg.bits_per_step
    assert sum(allocation) == k and all(a > 0 for a in allocation)
    assert all(a <= b for a, b in zip(allocation, allocation[1:]))
    M = z_cond.shape[0]
    S = len(allocation)
    cumulative = [0]
    for a in allocation:
        cumulative.append(cumulative[-1] + a)
    m = torch.full((M, k), MASK, dtype=torch.long)
    for s in range(S):
        ratio = 1 - cumulative[s] / k
        logits = reference_head_logits(sd, cfg, m, ratio, z_cond)
        if z_uncond is not None:
            uncond = reference_head_logits(sd, cfg, m, ratio, z_uncond)
            logits = uncond + weight * (logits - uncond)
        if stats is not None:
            stats.setdefault("logits", []).append(logits)
        new = m.clone()
        for row in range(M):
            values, conf = [], []
            for b in range(k):
                if int(m[row, b]) != MASK:  # decided bits keep their value, confidence +inf
                    values.append(int(m[row, b]))
                    conf.append(math.inf)
                    continue
                l0, l1 = float(logits[row, b, 0]), float(logits[row, b, 1])
                v = 1 if l1 > l0 else 0  # T = 0: argmax (first index on ties)
                if stats is not None:
                    stats["min_margin"] = min(stats.get("min_margin", math.inf), abs(l1 - l0))
                values.append(v)
                conf.append(l1 if v == 1 else l0)  # raw guided logit of the chosen value
            if s == S - 1:
                new[row] = torch.tensor(values)
                continue
            masked_now = sum(1 for b in range(k) if int(m[row, b]) == MASK)
            keep = min(max(k - cumulative[s + 1], 1), masked_now - 1)
            if keep > 0:
                ranked = sorted(conf)
                cutoff = ranked[keep - 1]
                if stats is not None and keep < k:
                    stats["min_margin"] = min(stats.get("min_margin", math.inf), ranked[keep] - cutoff)
                for b in range(k):
                    new[row, b] = MASK if conf[b] <= cutoff else values[b]
            else:
                new[row] = torch.tensor(values)
        m = new
    return m


def reference_generate(
    sd: dict,
    cfg: RefGenConfig,
    class_ids: list[int],
    guidance_scale: float,
    allocation: list[int],
    stats: dict | None = None,
) -> torch.Tensor:
    """§4.4 without a KV cache: recompute the full causal prefix every AR step; raster order; linear CFG ramp;
    temperature 0. Returns un-patchified bits (B, H'W', t) in raster order (§3.2). `stats` also collects the
    per-step `conditions` ([cond; null] rows with CFG)."""
    N, k = cfg.num_steps, cfg.bits_per_step
    B = len(class_ids)
    use_cfg = guidance_scale > 1
    labels = torch.tensor(class_ids)
    if use_cfg:
        labels = torch.cat([labels, torch.full((B,), cfg.num_classes)])
    raster = torch.arange(N)[None].repeat(labels.shape[0], 1)
    tokens = torch.zeros(B, 0, k, dtype=torch.long)
    for i in range(N):
        w = 1 + (guidance_scale - 1) * i / N if use_cfg else 1.0
        ordered = torch.cat([tokens, tokens]) if use_cfg else tokens
        z = _backbone(sd, cfg, ordered, labels, raster)[:, i]  # slot P - 1 + i predicts token i
        if stats is not None:
            stats.setdefault("conditions", []).append(z)
        z_cond, z_uncond = (z[:B], z[B:]) if use_cfg else (z, None)
        token = reference_sample_token(sd, cfg, z_cond, z_uncond, w, allocation, stats)
        tokens = torch.cat([tokens, token[:, None]], dim=1)
    return reference_unpatchify(tokens, cfg)


# ---------------------------------------------------------------------------------------------------- tokenizer
def reference_fsq_constants() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """§2.3 binary FSQ constants as float32 tensors: half_l = (L-1)(1+eps)/2, offset 0.5, shift atanh(offset/half_l)."""
    half_l = (torch.tensor(2.0, dtype=torch.float32) - 1) * (1 + 1e-3) / 2
    offset = torch.tensor(0.5, dtype=torch.float32)
    shift = torch.atanh(offset / half_l)
    return half_l, offset, shift


def reference_fsq_bits(u: torch.Tensor) -> torch.Tensor:
    """§2.3: channel values u (…, t) → int64 bits: b = tanh(u + s)·h − o, q = round-half-even(b), ẑ = 2q + 1,
    bit = round((ẑ + 1) / 2) clamped to {0, 1}."""
    half_l, offset, shift = reference_fsq_constants()
    bounded = torch.tanh(u.float() + shift) * half_l - offset
    q = torch.round(bounded)  # torch.round rounds half to even: round(-0.5) = -0
    codes = 2 * q + 1
    return torch.round((codes + 1) / 2).clamp(0, 1).to(torch.int64)


def reference_decode(sd: dict, cfg: RefTokConfig, bits: torch.Tensor) -> torch.Tensor:
    """§2.4: bits (B, L, t) → ±1 → out_proj → [class token; tokens] + positions → ln_pre → pre-norm ViT blocks
    → drop class token → ln_post → 1×1 conv → depth-to-space (p1, p2, c) → 3×3 conv. Image in [-1, 1] convention."""
    eps = cfg.ln_eps
    codes = 2 * bits.float() - 1
    tokens = _linear(codes, sd, "quantize.out_proj")
    B, L, W = tokens.shape
    x = torch.cat([sd["decoder.class_embedding"][None].expand(B, 1, W), tokens], dim=1)
    x = x + sd["decoder.positional_embedding"][None]
    x = _layer_norm(x, sd["decoder.ln_pre.weight"], sd["decoder.ln_pre.bias"], eps)
    head_dim = W // cfg.num_heads
    j = 0
    while f"decoder.transformer.{j}.norm1.weight" in sd:
        pre = f"decoder.transformer.{j}."
        h = _layer_norm(x, sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], eps)
        qkv = _linear(h, sd, pre + "attn.qkv")
        outs = []
        for hh in range(cfg.num_heads):
            sl = slice(hh * head_dim, (hh + 1) * head_dim)
            q, k, v = qkv[..., :W][..., sl], qkv[..., W : 2 * W][..., sl], qkv[..., 2 * W :][..., sl]
            outs.append(_softmax_attention(q, k, v))
        x = x + _linear(torch.cat(outs, dim=-1), sd, pre + "attn.proj")
        h = _layer_norm(x, sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], eps)
        x = x + _linear(_gelu_exact(_linear(h, sd, pre + "mlp.fc1")), sd, pre + "mlp.fc2")
        j += 1
    x = _layer_norm(x[:, 1:], sd["decoder.ln_post.weight"], sd["decoder.ln_post.bias"], eps)

    # 1×1 conv as a per-token linear map, then depth-to-space with channel index (p1·p + p2)·C + c
    gh, gw, p = cfg.grid_height, cfg.grid_width, cfg.patch_size
    conv1 = sd["decoder.ffn.0.weight"][:, :, 0, 0]
    per_token = torch.matmul(x, conv1.t()) + sd["decoder.ffn.0.bias"]  # (B, L, p·p·C)
    C = per_token.shape[-1] // (p * p)
    image = per_token.new_zeros(B, C, gh * p, gw * p)
    for n in range(L):
        r, c = divmod(n, gw)
        patch = per_token[:, n].reshape(B, p, p, C)  # (p1, p2, c)
        image[:, :, r * p : (r + 1) * p, c * p : (c + 1) * p] = patch.permute(0, 3, 1, 2)
    return torch.nn.functional.conv2d(image, sd["decoder.conv_out.weight"], sd["decoder.conv_out.bias"], padding=1)
