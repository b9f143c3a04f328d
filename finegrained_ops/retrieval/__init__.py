"""Image retrieval with CNN features (docs/semantics.md §6): global descriptors pooled from a
convolutional feature map, learned whitening (PCA or from matching pairs), query expansion and
database-side augmentation, diffusion re-ranking, the contrastive loss, class activation maps,
iSQRT-COV covariance pooling. Pure PyTorch (diffusion: scipy's sparse solver)."""
from .cam import class_activation_map
from .contrastive_loss import contrastive_loss
from .covariance_pooling import isqrt_cov
from .diffusion import diffusion_rerank
from .descriptors import crow, gem, mac, rmac, rmac_regions, spoc
from .query_expansion import database_augmentation, query_expansion
from .whitening import PCAWhitening, same_label_pairs

__all__ = ["PCAWhitening", "class_activation_map", "contrastive_loss", "crow",
           "database_augmentation", "diffusion_rerank", "gem", "isqrt_cov", "mac", "query_expansion", "rmac",
           "rmac_regions", "same_label_pairs", "spoc"]
