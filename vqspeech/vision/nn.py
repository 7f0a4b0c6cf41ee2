"""Modules of the image and video recipes: 2-d VQ-VAE, gated PixelCNN, latent-frame prior.

* :class:`ImageVQVAE`: strided 2-d conv encoder -> :class:`~vqspeech.nn.quantizer.VectorQuantizer`
  (the speech model's, unchanged) -> mirrored transposed-conv decoder ending in a 256-way
  categorical per sub-pixel (paper section 4.2). Used for CIFAR-10, digits and video frames.
* :class:`GatedPixelCNN`: prior over a code map ``[B, H, W]`` in raster order, with a vertical
  and a horizontal stack (no blind spot) and optional class and spatial conditioning
  (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").
* :class:`LatentFramePrior`: the video prior (paper section 4.4): a gated PixelCNN over the
  next latent frame's codes, conditioned on the previous latent frame (spatially) and on the
  action (globally). Rolling out never leaves latent space.

Pixels enter the models as ``uint8`` (or integer-valued) tensors ``[B, C, H, W]`` in
``[0, 255]``; they are scaled to ``[-1, 1]`` inside.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.nn.quantizer import VectorQuantizer
from vqspeech.vision.config import ImageModelConfig, PixelCNNConfig, VideoPriorConfig

#: Values one sub-pixel can take: the decoder's categorical has this many classes.
PIXEL_LEVELS = 256
#: Initial log-scale of the discretised logistic, on the [-1, 1] pixel scale: e^-3 * 127.5 is
#: about 6 grey levels.
LOGISTIC_INIT_LOG_SCALE = -3.0


def pixels_to_input(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` integers in ``[0, 255]`` -> float ``[-1, 1]``."""
    return images.float() / 127.5 - 1.0


class ResidualBlock2d(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))`` (the paper's residual block, section 4.2)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv1 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


class ImageEncoder(nn.Module):
    """``[B, C, H, W]`` in ``[-1, 1]`` -> ``[B, D, H / 2**n, W / 2**n]``.

    ``n_downsample`` stride-2 4x4 convs, ``n_res_blocks`` residual blocks, a 1x1 conv to D.
    """

    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        c = config
        layers: list[nn.Module] = []
        in_ch = c.image_channels
        for i in range(c.n_downsample):
            layers.append(nn.Conv2d(in_ch, c.channels, 4, stride=2, padding=1))
            if i < c.n_downsample - 1:
                layers.append(nn.ReLU())
            in_ch = c.channels
        layers += [ResidualBlock2d(c.channels, c.res_channels) for _ in range(c.n_res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(c.channels, c.quantizer.dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ImageDecoder(nn.Module):
    """``[B, D, h, w]`` -> pixel-distribution parameters ``[B, P, h * 2**n, w * 2**n]``.

    The mirror of the encoder: a 3x3 conv from D, the residual blocks, ``n_downsample``
    stride-2 4x4 transposed convs (the last one to ``channels // 2``), then a 1x1 conv to the
    parameters of :func:`pixel_nll` (``P = 256 * C`` logits, or ``2 * C`` logistic means and
    log-scales).
    """

    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        c = config
        head = max(16, c.channels // 2)
        layers: list[nn.Module] = [nn.Conv2d(c.quantizer.dim, c.channels, 3, padding=1)]
        layers += [ResidualBlock2d(c.channels, c.res_channels) for _ in range(c.n_res_blocks)]
        layers.append(nn.ReLU())
        for i in range(c.n_downsample):
            out_ch = head if i == c.n_downsample - 1 else c.channels
            layers += [nn.ConvTranspose2d(c.channels, out_ch, 4, stride=2, padding=1), nn.ReLU()]
        out = nn.Conv2d(head, c.image_channels * pixel_params(c.likelihood), 1)
        if c.likelihood == "logistic":
            # Start the log-scales at a few grey levels. From 0 (a scale as wide as the whole
            # range) Adam, which moves a bias by about lr per step, needs thousands of steps to
            # get there, and until then the likelihood barely rewards a sharp mean.
            assert out.bias is not None
            with torch.no_grad():
                out.bias[c.image_channels :] = LOGISTIC_INIT_LOG_SCALE
        layers.append(out)
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def pixel_params(likelihood: str) -> int:
    """Decoder outputs per sub-pixel: 256 logits (categorical) or mean + log-scale (logistic)."""
    return PIXEL_LEVELS if likelihood == "categorical" else 2


def pixel_nll(params: Tensor, images: Tensor, likelihood: str) -> Tensor:
    """``-log p(x)`` per sub-pixel ``[B, C, H, W]`` in nats: an exact discrete likelihood over 0..255.

    ``categorical``: ``params`` ``[B, 256 * C, H, W]`` viewed as ``[B, 256, C, H, W]`` logits
    (levels first, the layout :func:`torch.nn.functional.cross_entropy` wants: no copy).
    ``logistic``: ``params`` ``[B, 2 * C, H, W]`` = means and log-scales on the ``[-1, 1]``
    scale; value ``v`` gets the logistic's mass on its bin ``[v - 0.5, v + 0.5]`` (scaled),
    with the tails folded into 0 and 255 (PixelCNN++, Salimans et al. 2017), so the 256
    probabilities sum to one.
    """
    b, _, h, w = params.shape
    target = images.long()
    if likelihood == "categorical":
        logits = params.float().view(b, PIXEL_LEVELS, -1, h, w)
        return F.cross_entropy(logits, target, reduction="none")
    mean, log_scale = params.float().view(b, 2, -1, h, w).unbind(1)
    log_scale = log_scale.clamp(min=-7.0)
    x = pixels_to_input(target)
    inv = torch.exp(-log_scale)
    half_bin = 1.0 / 255.0
    upper = inv * (x - mean + half_bin)
    lower = inv * (x - mean - half_bin)
    log_cdf_upper = F.logsigmoid(upper)  # log P(X <= v + 0.5)
    log_sf_lower = -F.softplus(lower)  # log P(X > v - 0.5)
    mid = _log_diff_sigmoid(upper, lower)  # log P(v - 0.5 < X <= v + 0.5)
    log_prob = torch.where(
        target == 0, log_cdf_upper, torch.where(target == PIXEL_LEVELS - 1, log_sf_lower, mid)
    )
    return -log_prob


def _log_diff_sigmoid(upper: Tensor, lower: Tensor) -> Tensor:
    """``log(sigmoid(upper) - sigmoid(lower))`` for ``upper > lower``, stable in both tails."""
    # sigmoid(u) - sigmoid(l) = sigmoid(u) * sigmoid(-l) * (1 - exp(l - u))
    return F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))


def pixel_mode(params: Tensor, likelihood: str) -> Tensor:
    """The most likely image ``[B, C, H, W]`` uint8 under the decoder's pixel distribution."""
    b, _, h, w = params.shape
    if likelihood == "categorical":
        return params.view(b, PIXEL_LEVELS, -1, h, w).argmax(1).to(torch.uint8)
    mean = params.float().view(b, 2, -1, h, w)[:, 0]
    return ((mean + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class ImageVQVAEOutput(NamedTuple):
    """Result of :meth:`ImageVQVAE.forward`.

    Attributes:
        loss: scalar, ``reconstruction_loss + codebook_loss + commitment_loss`` (paper eq. 3).
        reconstruction_loss: scalar, ``-log p(x | z_q(x))`` in nats per sub-pixel (mean).
        codebook_loss, commitment_loss, perplexity: the quantiser's (beta already applied).
        codes: ``[B, h, w]`` int64.
        params: ``[B, P, H, W]``, the decoder's pixel-distribution parameters (:func:`pixel_nll`).
    """

    loss: Tensor
    reconstruction_loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    codes: Tensor
    params: Tensor


class ImageVQVAE(nn.Module):
    """2-d VQ-VAE with an exact discrete pixel likelihood (``config.likelihood``)."""

    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config)
        self.quantizer = VectorQuantizer(config.quantizer)
        self.decoder = ImageDecoder(config)

    def forward(self, images: Tensor) -> ImageVQVAEOutput:
        """``images`` ``[B, C, H, W]`` integers in ``[0, 255]``; updates the codebook in train mode."""
        vq = self.quantizer(self.encoder(pixels_to_input(images)))
        params = self.decoder(vq.quantized)
        reconstruction = pixel_nll(params, images, self.config.likelihood).mean()
        loss = reconstruction + vq.codebook_loss + vq.commitment_loss
        return ImageVQVAEOutput(
            loss, reconstruction, vq.codebook_loss, vq.commitment_loss, vq.perplexity, vq.codes, params
        )

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` pixels -> codes ``[B, h, w]`` int64 (no state change)."""
        return self.quantizer.quantize(self.encoder(pixels_to_input(images)))

    def decode_params(self, codes: Tensor) -> Tensor:
        """Codes ``[B, h, w]`` -> pixel-distribution parameters ``[B, P, H, W]``."""
        return self.decoder(self.quantizer.lookup(codes))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, h, w]`` -> the most likely image ``[B, C, H, W]`` uint8."""
        return pixel_mode(self.decode_params(codes), self.config.likelihood)

    @torch.no_grad()
    def reconstruction_nll(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``-log p(x | z_q(x))`` per image ``[B]`` (nats, summed over sub-pixels) and codes ``[B, h, w]``."""
        codes = self.encode(images)
        nll = pixel_nll(self.decode_params(codes), images, self.config.likelihood)
        return nll.flatten(1).sum(1), codes


# ---------------------------------------------------------------------------------------
# Gated PixelCNN


def _gate(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedMaskedLayer(nn.Module):
    """One gated layer with a vertical and a horizontal stack.

    Vertical: a ``(k//2 + 1) x k`` conv over rows ``i - k//2 .. i`` (the first layer masks
    row ``i``, so its output at row ``i`` sees only rows above). Horizontal: a ``1 x (k//2+1)``
    conv over columns ``j - k//2 .. j`` of row ``i`` (the first layer masks column ``j``)
    plus a 1x1 projection of the vertical features. Vertical features at row ``i`` only ever
    depend on input rows ``< i``, so feeding them to the horizontal stack keeps raster-order
    causality and covers the whole region above (no blind spot). Conditioning adds a bias to
    every gate: per class ``[B]`` (an embedding) and per position ``[B, S, H, W]`` (a 1x1 conv).
    """

    mask_v: Tensor
    mask_h: Tensor

    def __init__(
        self, channels: int, kernel_size: int, first: bool, n_classes: int, cond_channels: int
    ) -> None:
        super().__init__()
        k, p = kernel_size, kernel_size // 2
        self.pad = p
        self.first = first
        self.v_conv = nn.Conv2d(channels, 2 * channels, (p + 1, k))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_conv = nn.Conv2d(channels, 2 * channels, (1, p + 1))
        self.h_out = nn.Conv2d(channels, channels, 1)
        mask_v = torch.ones(1, 1, p + 1, k)
        mask_h = torch.ones(1, 1, 1, p + 1)
        if first:
            mask_v[..., -1, :] = 0.0  # the current row
            mask_h[..., -1] = 0.0  # the current position
        self.register_buffer("mask_v", mask_v, persistent=False)
        self.register_buffer("mask_h", mask_h, persistent=False)
        self.class_bias = nn.Embedding(n_classes, 4 * channels) if n_classes else None
        self.cond_bias = nn.Conv2d(cond_channels, 4 * channels, 1) if cond_channels else None

    def forward(
        self, v: Tensor, h: Tensor, labels: Tensor | None, cond: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        p = self.pad
        v_feat = F.conv2d(F.pad(v, (p, p, p, 0)), self.v_conv.weight * self.mask_v, self.v_conv.bias)
        h_feat = F.conv2d(F.pad(h, (p, 0, 0, 0)), self.h_conv.weight * self.mask_h, self.h_conv.bias)
        h_feat = h_feat + self.v_to_h(v_feat)
        bias: Tensor | float = 0.0
        if self.class_bias is not None and labels is not None:
            bias = self.class_bias(labels)[:, :, None, None]
        if self.cond_bias is not None and cond is not None:
            bias = bias + self.cond_bias(cond)
        if isinstance(bias, Tensor):
            bias_v, bias_h = bias.chunk(2, dim=1)
            v_feat, h_feat = v_feat + bias_v, h_feat + bias_h
        v_out = _gate(v_feat)
        h_out = self.h_out(_gate(h_feat))
        # The first layer's input holds the current code, so it gets no residual connection.
        return v_out, h_out if self.first else h_out + h


class GatedPixelCNN(nn.Module):
    """Autoregressive prior over code maps ``[B, H, W]`` with values in ``[0, K)``, raster order.

    Args:
        codebook_size: K.
        config: channels, layers, kernel_size, n_classes (0: unconditional).
        cond_channels: channels of an optional spatial conditioning map ``[B, S, H, W]``
            (0: none); it may look anywhere (it is given, not generated).

    ``forward`` returns logits ``[B, K, H, W]``: position ``(i, j)`` depends only on codes
    before it in raster order (and on the conditioning).
    """

    def __init__(self, codebook_size: int, config: PixelCNNConfig, cond_channels: int = 0) -> None:
        super().__init__()
        self.config = config
        self.codebook_size = codebook_size
        ch = config.channels
        self.embedding = nn.Embedding(codebook_size, ch)
        self.layers = nn.ModuleList(
            GatedMaskedLayer(ch, config.kernel_size, i == 0, config.n_classes, cond_channels)
            for i in range(config.layers)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 1), nn.ReLU(), nn.Conv2d(ch, codebook_size, 1))

    def _check_labels(self, labels: Tensor | None) -> None:
        if self.config.n_classes and labels is None:
            raise ValueError("this prior is class-conditional: pass labels")
        if not self.config.n_classes and labels is not None:
            raise ValueError("this prior is unconditional: labels must be None")

    def forward(self, codes: Tensor, labels: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """Codes ``[B, H, W]``, labels ``[B]`` or None, cond ``[B, S, H, W]`` -> logits ``[B, K, H, W]``."""
        self._check_labels(labels)
        x = self.embedding(codes).permute(0, 3, 1, 2)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, labels, cond)
        return self.head(h)

    def nll(self, codes: Tensor, labels: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """``-log p(codes)`` per map ``[B]`` in nats (summed over positions)."""
        logits = self(codes, labels, cond)
        return F.cross_entropy(logits.float(), codes, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self,
        shape: tuple[int, int, int],
        labels: Tensor | None = None,
        cond: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Draw code maps ``shape = (B, H, W)`` position by position in raster order.

        ``temperature`` 0 takes the most likely code at every position (greedy).
        """
        b, height, width = shape
        device = self.embedding.weight.device
        codes = torch.zeros(b, height, width, dtype=torch.long, device=device)
        for i in range(height):
            for j in range(width):
                # Rows below i cannot influence (i, j); cropping them saves work.
                logits = self(codes[:, : i + 1], labels, None if cond is None else cond[:, :, : i + 1])
                step = logits[:, :, i, j].float()
                if temperature <= 0:
                    codes[:, i, j] = step.argmax(1)
                else:
                    probs = torch.softmax(step / temperature, dim=1)
                    codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes


class LatentFramePrior(nn.Module):
    """``p(codes_{t+1} | codes_t, action_t)``: the video prior over latent frames ``[B, h, w]``.

    The previous frame's codes are embedded and passed through ``context_layers`` (non-causal)
    3x3 residual blocks; the result conditions every gate of a :class:`GatedPixelCNN` at the
    same position, and the action (one of ``n_actions``) adds a learnt per-action bias.
    """

    def __init__(self, codebook_size: int, config: VideoPriorConfig, n_actions: int) -> None:
        super().__init__()
        self.config = config
        self.n_actions = n_actions
        ch = config.channels
        self.context_embedding = nn.Embedding(codebook_size, ch)
        self.context = nn.Sequential(*[ResidualBlock2d(ch, ch) for _ in range(config.context_layers)])
        pixelcnn = PixelCNNConfig(
            channels=ch, layers=config.layers, kernel_size=config.kernel_size, n_classes=n_actions
        )
        self.pixelcnn = GatedPixelCNN(codebook_size, pixelcnn, cond_channels=ch)

    def context_map(self, previous: Tensor) -> Tensor:
        """Previous codes ``[B, h, w]`` -> conditioning map ``[B, channels, h, w]``."""
        return self.context(self.context_embedding(previous).permute(0, 3, 1, 2))

    def forward(self, previous: Tensor, actions: Tensor, codes: Tensor) -> Tensor:
        """Logits ``[B, K, h, w]`` of ``codes`` (teacher forcing) given ``previous``, ``actions`` ``[B]``."""
        return self.pixelcnn(codes, actions, self.context_map(previous))

    def nll(self, previous: Tensor, actions: Tensor, codes: Tensor) -> Tensor:
        """``-log p(codes | previous, actions)`` per frame ``[B]`` in nats."""
        return self.pixelcnn.nll(codes, actions, self.context_map(previous))

    @torch.no_grad()
    def sample(
        self,
        previous: Tensor,
        actions: Tensor,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Next latent frame ``[B, h, w]`` given ``previous`` ``[B, h, w]`` and ``actions`` ``[B]``."""
        cond = self.context_map(previous)
        b, h, w = previous.shape
        return self.pixelcnn.sample((b, h, w), actions, cond, generator=generator, temperature=temperature)
