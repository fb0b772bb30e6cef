"""Class-conditional DCGAN networks: a generator fed a class embedding beside its noise, and a
discriminator with a projection head (Miyato & Koyama, "cGANs with Projection Discriminator", 2018).

The generator is the DCGAN generator of the run's size with a wider input: z concatenated with a
learned embedding of the class. The discriminator is the DCGAN discriminator whose logit gets the
projection term <embed(y), phi(x)>, phi being the features its final layer reads: the class enters as
an inner product with what the discriminator sees rather than as an extra input channel, which is what
makes projection discriminators condition sharply.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .dcgan import build_dcgan


class ConditionalGenerator(nn.Module):
    """(z, class ids) -> images in [-1, 1]: the DCGAN generator on [z, embed(y)]."""

    def __init__(self, latent_dim: int, num_classes: int, channels: int, size: int, embed_dim: int = 32):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)
        nn.init.normal_(self.embed.weight, 0.0, 1.0)  # on the scale of the noise it sits beside
        self.net = build_dcgan(size, channels, latent_dim + embed_dim)[0]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(labels).to(z.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """(images, class ids) -> logits (N, 1): psi(phi(x)) + <embed(y), phi(x)>."""

    def __init__(self, num_classes: int, channels: int, size: int):
        super().__init__()
        self.net = build_dcgan(size, channels, 1)[1]
        with torch.no_grad():
            width = self.net.features(torch.zeros(1, channels, size, size)).shape[1]
        self.embed = nn.Embedding(num_classes, width)
        nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        phi = self.net.features(x)
        projection = (self.embed(labels).to(phi.dtype) * phi).sum(1, keepdim=True)
        return self.net.head(phi) + projection
