"""Residual quantizers: item embedding -> `levels` integer codes, and any code -> an embedding.

Paper section "Context compression". Residual quantization with `levels` codebooks C_1..C_L of K
codewords each: r_1 = z, c_d = argmin_k ||r_d - C_d[k]||, r_{d+1} = r_d - C_d[c_d], and the
quantized vector is the sum of the chosen codewords, z_hat = sum_d C_d[c_d]. Two quantizers share
this interface (`encode`, `reconstruct`, `codewords`, `state`):

    RQVAE      the paper's: an MLP encoder maps the embedding x to a latent z, z is residual-
               quantized, an MLP decoder maps z_hat back to x_hat. Loss = ||x - x_hat||^2 +
               beta * sum_d ||r_d - sg(C_d[c_d])||^2 (reconstruction + commitment); the codebooks
               follow their assigned residuals by exponential moving averages (EMA) instead of a
               codebook loss, start from k-means, and unused ("dead") codes are reset every epoch.
    RQKMeans   residual k-means directly on the embeddings, level by level: no network, no epochs.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn
from conrec_lib.progress import tqdm

from conrec_lib.configs import check_types
from conrec_lib.hardware import cpu_threads, resolve_device

QUANTIZERS = ("rqvae", "rqkmeans")
MAX_LEVELS = 25  # one letter a..y per level; the de-duplication token takes the next letter


@dataclasses.dataclass
class SIDConfig:
    """How to build semantic IDs: the quantizer, the code shape, and RQ-VAE training."""

    # which quantizer: "rqvae" (the paper's) or "rqkmeans" (residual k-means, no training loop)
    quantizer: str = "rqvae"
    # code shape: `levels` tokens per item, each one of `codebook_size` codes
    levels: int = 3
    codebook_size: int = 64  # paper (Taobao, millions of items): 8192
    # RQ-VAE network (ignored by rqkmeans)
    latent_dim: int = 32
    hidden_dims: tuple[int, ...] = (256, 128)
    # RQ-VAE training
    warmup_epochs: int = 10  # autoencoder only, before the k-means initialisation of the codebooks
    epochs: int = 50  # GPU, large catalogues: 200+
    batch_size: int = 256  # GPU: 1024
    lr: float = 1e-3
    commitment_weight: float = 0.25  # beta in the loss above
    ema_decay: float = 0.99  # gamma of the codebook moving averages
    dead_code_threshold: int = 1  # a code used fewer times than this in an epoch is reset
    # reproducibility and hardware
    seed: int = 0
    device: Optional[str] = None  # None: CUDA when available, else CPU
    cpu_threads: Optional[int] = 1  # CPU threads (torch, k-means) while fitting; None: as set (see `fit`)

    def __post_init__(self) -> None:
        check_types(self)
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"SIDConfig.quantizer={self.quantizer!r} is unknown; use one of {QUANTIZERS}")
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"SIDConfig.levels={self.levels}; use 1..{MAX_LEVELS} (the paper uses 3)")
        if self.codebook_size < 2:
            raise ValueError(f"SIDConfig.codebook_size={self.codebook_size}; use at least 2 codes per level")
        _check_positive(self, "latent_dim", "epochs", "batch_size", "lr")
        if self.warmup_epochs < 0 or self.dead_code_threshold < 0:
            raise ValueError(f"SIDConfig.warmup_epochs={self.warmup_epochs}, dead_code_threshold="
                             f"{self.dead_code_threshold}: both must be >= 0 (0 turns them off)")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"SIDConfig.cpu_threads={self.cpu_threads}; use None or a number >= 1")
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"SIDConfig.hidden_dims={self.hidden_dims}; every layer width must be >= 1")
        if self.commitment_weight < 0:
            raise ValueError(f"SIDConfig.commitment_weight={self.commitment_weight}; use >= 0 (0.25 is usual)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"SIDConfig.ema_decay={self.ema_decay}; use a value in [0, 1), e.g. 0.99")


def _check_positive(cfg: SIDConfig, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"SIDConfig.{name}={getattr(cfg, name)}; it must be > 0")


class Quantizer(Protocol):
    """What `semantic_ids` needs from a quantizer."""

    levels: int
    codebook_size: int
    input_dim: int  # size of the item embeddings it encodes and reconstructs

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, d) embeddings -> (n, levels) int64 codes."""

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """(n, levels) codes, any valid ones -> (n, d) embeddings (sum of codewords, decoded)."""

    def codewords(self) -> np.ndarray:
        """(levels, codebook_size, latent) codebooks."""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that `from_state` turns back into the same quantizer."""


@dataclasses.dataclass
class Fit:
    """A trained quantizer and its training history (one row per epoch, or per level for RQ-KMeans)."""

    quantizer: Quantizer
    history: pd.DataFrame


def fit(embeddings: np.ndarray, cfg: SIDConfig, progress: bool = False) -> Fit:
    """Train the quantizer `cfg.quantizer` on (n_items, d) embeddings.

    The matrices are small, so on a CPU one thread beats several: on the 2-core CPU under load,
    2 threads made RQ-VAE fitting 8x slower (thread hand-offs cost more than the matmuls).
    """
    x = check_embeddings(embeddings, cfg)
    with cpu_threads(cfg.cpu_threads):
        if cfg.quantizer == "rqkmeans":
            return fit_rqkmeans(x, cfg)
        return fit_rqvae(x, cfg, progress)


def check_embeddings(embeddings: np.ndarray, cfg: SIDConfig) -> np.ndarray:
    """`embeddings` as float32 (n, d), after checking it can be quantized with `cfg`."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"embeddings must be a 2-D array (n_items >= 2, dim); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf; re-run embeddings.embed_items")
    if cfg.codebook_size > x.shape[0]:
        raise ValueError(f"SIDConfig.codebook_size={cfg.codebook_size} is larger than the number of items "
                         f"({x.shape[0]}): a level cannot use more codes than there are items; "
                         f"use codebook_size <= {x.shape[0]}")
    return x


def nearest(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword (squared Euclidean) for each row; ties go to the lower index."""
    dist = (vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ codebook.T
            + codebook.pow(2).sum(1)[None, :])  # (n, K)
    return dist.argmin(dim=1)


def check_codes(codes: np.ndarray, levels: int, codebook_size: int) -> np.ndarray:
    """`codes` as (n, levels) int64 after checking that every code is in 0..codebook_size-1."""
    codes = np.atleast_2d(np.asarray(codes))
    if codes.ndim != 2 or codes.shape[1] != levels or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers of shape (n, {levels}); got {codes.dtype} {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in 0..{codebook_size - 1}; found {codes.min()}..{codes.max()}")
    return codes.astype(np.int64)


def _kmeans(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k, d), labels (n,)) of seeded k-means."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(points)
    return km.cluster_centers_.astype(np.float32), km.labels_


def usage_stats(codes: np.ndarray, codebook_size: int) -> tuple[float, float]:
    """(share of codes used, perplexity = exp(entropy of the code frequencies)) of one level.

    >>> usage_stats(np.array([0, 1, 2, 3]), 8)
    (0.5, 4.0)
    """
    counts = np.bincount(codes, minlength=codebook_size)
    p = counts[counts > 0] / counts.sum()
    return float((counts > 0).mean()), float(round(np.exp(-(p * np.log(p)).sum()), 6))


# --- RQ-KMeans -------------------------------------------------------------------------------

class RQKMeans:
    """Residual k-means: level d clusters what levels < d left over; codewords live in embedding space."""

    def __init__(self, codebooks: np.ndarray):
        self.codebooks = np.asarray(codebooks, dtype=np.float32)  # (levels, K, d)
        self.levels, self.codebook_size, self.input_dim = self.codebooks.shape

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        residual = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        codes = []
        for codebook in torch.as_tensor(self.codebooks):
            idx = nearest(residual, codebook)
            codes.append(idx)
            residual = residual - codebook[idx]
        return torch.stack(codes, dim=1).numpy().astype(np.int64)

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        codes = check_codes(codes, self.levels, self.codebook_size)
        return self.codebooks[np.arange(self.levels), codes].sum(axis=1)  # (n, d)

    def codewords(self) -> np.ndarray:
        return self.codebooks

    def state(self) -> dict[str, np.ndarray]:
        return {"codebooks": self.codebooks}


def fit_rqkmeans(x: np.ndarray, cfg: SIDConfig) -> Fit:
    """Residual k-means, level by level (seed + level seeds each level's k-means)."""
    residual, codebooks, rows = x.astype(np.float32), [], []
    for level in range(cfg.levels):
        centroids, labels = _kmeans(residual, cfg.codebook_size, cfg.seed + level)
        residual = residual - centroids[labels]
        utilization, perplexity = usage_stats(labels, cfg.codebook_size)
        rows.append({"level": level, "residual_mse": float((residual ** 2).mean()),
                     "utilization": utilization, "perplexity": perplexity})
        codebooks.append(centroids)
    return Fit(RQKMeans(np.stack(codebooks)), pd.DataFrame(rows))


# --- RQ-VAE ----------------------------------------------------------------------------------

def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclasses.dataclass
class RQOutput:
    """One forward pass of the RQ-VAE on a batch."""

    x_hat: torch.Tensor  # (B, d) decoded reconstruction
    codes: torch.Tensor  # (B, levels) int64
    residuals: list[torch.Tensor]  # levels x (B, latent): the input r_d of each level
    commit: torch.Tensor  # scalar: sum_d ||r_d - sg(C_d[c_d])||^2, batch mean


class RQVAE(nn.Module):
    """MLP encoder -> residual quantizer with EMA codebooks -> MLP decoder."""

    def __init__(self, input_dim: int, cfg: SIDConfig):
        super().__init__()
        self.levels, self.codebook_size, self.decay = cfg.levels, cfg.codebook_size, cfg.ema_decay
        self.input_dim = input_dim
        self.encoder = _mlp([input_dim, *cfg.hidden_dims, cfg.latent_dim])
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden_dims), input_dim])
        shape = (cfg.levels, cfg.codebook_size)
        self.register_buffer("codebooks", torch.zeros(*shape, cfg.latent_dim))  # (L, K, latent)
        self.register_buffer("ema_count", torch.ones(*shape))  # (L, K) moving average of code counts
        self.register_buffer("ema_sum", torch.zeros(*shape, cfg.latent_dim))  # (L, K, latent)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(z_hat = sum of chosen codewords, codes (B, L), residuals r_1..r_L) of latents z (B, latent)."""
        residual, z_hat, codes, residuals = z, torch.zeros_like(z), [], []
        for level in range(self.levels):
            residuals.append(residual)
            idx = nearest(residual.detach(), self.codebooks[level])
            chosen = self.codebooks[level][idx]
            codes.append(idx)
            z_hat, residual = z_hat + chosen, residual - chosen
        return z_hat, torch.stack(codes, dim=1), residuals

    def forward(self, x: torch.Tensor) -> RQOutput:
        z = self.encoder(x)  # (B, latent)
        z_hat, codes, residuals = self.quantize(z)
        commit = sum(((r - self.codebooks[d][codes[:, d]]) ** 2).sum(1).mean() for d, r in enumerate(residuals))
        z_st = z + (z_hat - z).detach()  # straight-through: the decoder sees z_hat, gradients reach z
        return RQOutput(self.decoder(z_st), codes, residuals, commit)

    @torch.no_grad()
    def ema_update(self, codes: torch.Tensor, residuals: list[torch.Tensor]) -> None:
        """Move each codeword towards the mean of the residuals assigned to it (Laplace-smoothed)."""
        for level, residual in enumerate(residuals):
            onehot = nn.functional.one_hot(codes[:, level], self.codebook_size).type_as(residual)  # (B, K)
            self.ema_count[level].lerp_(onehot.sum(0), 1 - self.decay)
            self.ema_sum[level].lerp_(onehot.T @ residual.detach(), 1 - self.decay)
            n, eps = self.ema_count[level].sum(), 1e-5
            smoothed = (self.ema_count[level] + eps) / (n + self.codebook_size * eps) * n
            self.codebooks[level].copy_(self.ema_sum[level] / smoothed[:, None])

    @torch.no_grad()
    def set_codewords(self, level: int, which: torch.Tensor, vectors: torch.Tensor, count: float) -> None:
        """Overwrite codewords `which` of `level` (k-means init, dead-code reset) and their EMA state."""
        self.codebooks[level][which] = vectors
        self.ema_count[level][which] = count
        self.ema_sum[level][which] = vectors * count

    @torch.no_grad()
    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32), device=self.codebooks.device)
        return self.quantize(self.encoder(x))[1].cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        codes = torch.as_tensor(check_codes(codes, self.levels, self.codebook_size), device=self.codebooks.device)
        z_hat = self.codebooks[torch.arange(self.levels, device=codes.device), codes].sum(1)  # (n, latent)
        return self.decoder(z_hat).cpu().numpy()

    def codewords(self) -> np.ndarray:
        return self.codebooks.detach().cpu().numpy()

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}


@torch.no_grad()
def init_codebooks(model: RQVAE, x: torch.Tensor, cfg: SIDConfig) -> None:
    """k-means initialisation: level d's codebook = k-means centroids of the residuals r_d of all items."""
    residual = model.encoder(x).cpu().numpy()
    count = min(cfg.batch_size, len(x)) / cfg.codebook_size  # mean count per code in a batch, as in the EMA
    for level in range(model.levels):
        centroids, labels = _kmeans(residual, model.codebook_size, cfg.seed + level)
        every = torch.arange(model.codebook_size, device=x.device)
        model.set_codewords(level, every, torch.as_tensor(centroids).to(x.device), count)
        residual = residual - centroids[labels]


@torch.no_grad()
def reset_dead_codes(model: RQVAE, usage: torch.Tensor, residuals: list[torch.Tensor], threshold: int,
                     gen: torch.Generator) -> int:
    """Move codes used fewer than `threshold` times this epoch onto random residuals of their level."""
    n_reset = 0
    for level in range(model.levels):
        dead = torch.nonzero(usage[level] < threshold).ravel()
        if len(dead):
            pool = residuals[level]
            pick = torch.randint(len(pool), (len(dead),), generator=gen)
            model.set_codewords(level, dead, pool[pick.to(pool.device)], float(threshold))
            n_reset += len(dead)
    return n_reset


def fit_rqvae(x: np.ndarray, cfg: SIDConfig, progress: bool = False) -> Fit:
    """Train an RQ-VAE on the embeddings; every random choice comes from `cfg.seed`.

    Warm-up epochs train the plain autoencoder, so the k-means initialisation sees trained latents
    (initialised on an untrained encoder, the codebooks are left behind by the first epoch's large
    updates and most codes die). The history has one row per epoch, `phase` "warmup" or "quantized".
    """
    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[]):  # seeded weight init without touching the global RNG
        torch.manual_seed(cfg.seed)
        model = RQVAE(x.shape[1], cfg).to(device)
    xt = torch.as_tensor(x, device=device)
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    total, rows = cfg.warmup_epochs + cfg.epochs, []
    for epoch in tqdm(range(total), desc="RQ-VAE", disable=not progress):
        if epoch < cfg.warmup_epochs:
            rows.append(warmup_epoch(model, xt, optimizer, cfg, gen))
            continue
        if epoch == cfg.warmup_epochs:
            init_codebooks(model, xt, cfg)
        rows.append(train_epoch(model, xt, optimizer, cfg, gen, reset=epoch < total - 1))
    model.eval()
    return Fit(model, pd.DataFrame(rows).rename_axis("epoch").reset_index())


def _batches(n: int, cfg: SIDConfig, gen: torch.Generator, device) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).to(device).split(cfg.batch_size))


def warmup_epoch(model: RQVAE, x: torch.Tensor, optimizer: torch.optim.Optimizer, cfg: SIDConfig,
                 gen: torch.Generator) -> dict:
    """One epoch of the autoencoder without quantization: loss = ||x - dec(enc(x))||^2."""
    model.train()
    recon_sum = 0.0
    for batch in _batches(len(x), cfg, gen, x.device):
        recon = ((model.decoder(model.encoder(x[batch])) - x[batch]) ** 2).sum(1).mean()
        optimizer.zero_grad()
        recon.backward()
        optimizer.step()
        recon_sum += float(recon.detach()) * len(batch) / len(x)
    return {"phase": "warmup", "recon": recon_sum, "commit": float("nan"), "total": recon_sum}


def train_epoch(model: RQVAE, x: torch.Tensor, optimizer: torch.optim.Optimizer, cfg: SIDConfig,
                gen: torch.Generator, reset: bool) -> dict:
    """One epoch of the RQ-VAE: mean losses, per-level share of codes used, dead codes reset after it."""
    model.train()
    usage = torch.zeros(cfg.levels, cfg.codebook_size, device=x.device)  # (L, K) assignments this epoch
    sums, pools = {"recon": 0.0, "commit": 0.0, "total": 0.0}, [[] for _ in range(cfg.levels)]
    for batch in _batches(len(x), cfg, gen, x.device):
        out = model(x[batch])
        recon = ((out.x_hat - x[batch]) ** 2).sum(1).mean()
        loss = recon + cfg.commitment_weight * out.commit
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.ema_update(out.codes, out.residuals)
        usage += nn.functional.one_hot(out.codes, cfg.codebook_size).sum(0)
        for level, r in enumerate(out.residuals):
            pools[level].append(r.detach())
        for key, value in zip(sums, (recon, out.commit, loss)):
            sums[key] += float(value.detach()) * len(batch) / len(x)
    row = {"phase": "quantized", **sums}
    row.update({f"utilization_{chr(97 + d)}": float((usage[d] > 0).float().mean()) for d in range(cfg.levels)})
    pools = [torch.cat(p) for p in pools]
    row["dead_codes_reset"] = reset_dead_codes(model, usage, pools, cfg.dead_code_threshold, gen) if reset else 0
    return row


# --- save / load support -----------------------------------------------------------------------

def from_state(cfg: SIDConfig, input_dim: int, state: dict[str, np.ndarray]) -> Quantizer:
    """Rebuild the quantizer that `state()` described (used by `semantic_ids.load`)."""
    if cfg.quantizer == "rqkmeans":
        return RQKMeans(state["codebooks"])
    model = RQVAE(input_dim, cfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return model.to(resolve_device(cfg.device)).eval()
