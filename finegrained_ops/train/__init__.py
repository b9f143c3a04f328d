"""Training loop and the papers' recipes (docs/semantics.md §5): two-stage long-tail fine-tuning,
hierarchical cascaded fine-tuning, deferred re-weighting, classifier re-training (cRT, LWS),
τ-norm, dataset bootstrapping and quasi-online triplet sampling. Pure Python on top of the native ops."""
from .bootstrap import BootstrapResult, bootstrap_dataset
from .cascade import HierarchicalCascade
from .classifier_retraining import retrain_classifier
from .deferred_reweighting import DeferredReweighting
from .long_tail import two_stage_long_tail
from .loop import extract_features, fit
from .quasi_online import QuasiOnlineBatchSampler
from .tau_norm import tau_normalize, tau_normalized_linear

__all__ = [
    "BootstrapResult",
    "DeferredReweighting",
    "HierarchicalCascade",
    "QuasiOnlineBatchSampler",
    "bootstrap_dataset",
    "extract_features",
    "fit",
    "retrain_classifier",
    "tau_normalize",
    "tau_normalized_linear",
    "two_stage_long_tail",
]
