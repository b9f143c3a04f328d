"""The README's examples as a user script, for mypy (tests/test_typing.py), never run: it checks
the calls against the package's annotations (py.typed)."""
import torch

import finegrained_ops as fo
from finegrained_ops import train
from finegrained_ops.nn import (BalancedSoftmaxLoss, ClassBalancedLoss, CompactBilinearPooling,
                                CosineLinear, GeM, KernelPooling, LDAMLoss, LogitAdjustedLoss,
                                SoftmaxFocalLoss, TripletAnchorPointLoss, TripletMarginLoss,
                                sigmoid_bias_init)

counts = [5000, 1200, 300, 40, 7]
logits = torch.randn(8, 5, requires_grad=True)
labels = torch.randint(0, 5, (8,))

loss: torch.Tensor = fo.class_balanced_loss(logits, labels, counts, beta=0.999, gamma=0.5,
                                            loss_type="focal")
criterion = ClassBalancedLoss(counts, beta=0.999, gamma=0.5, loss_type="focal")
loss = criterion(logits, labels)
bias: float = sigmoid_bias_init(5)
weights: torch.Tensor = fo.class_balanced_weights(counts, beta=0.999)
effective: torch.Tensor = fo.effective_number(counts, beta=0.999)

loss = fo.logit_adjusted_loss(logits, labels, counts, tau=1.0)
loss = fo.balanced_softmax_loss(logits, labels, counts)
loss = fo.ldam_loss(logits.tanh(), labels, counts, max_margin=0.5, scale=30.0)
loss = fo.softmax_focal_loss(logits, labels, gamma=2.0)
predictions: torch.Tensor = fo.logit_adjust(logits, counts, tau=1.0).argmax(1)
head = CosineLinear(512, 5)
for module in (LDAMLoss(counts), LogitAdjustedLoss(counts), BalancedSoftmaxLoss(counts),
               SoftmaxFocalLoss(gamma=2.0)):
    loss = module(head(torch.randn(8, 512)), labels)

pool = KernelPooling(in_channels=512, dim=4096, order=4, alpha="learned", seed=0)
gamma: float = pool.estimate_gamma(torch.randn(2, 512, 14, 14))
features: torch.Tensor = pool(torch.randn(2, 512, 14, 14))
two = CompactBilinearPooling(512, 8192, y_channels=256)
features = two(torch.randn(2, 512, 7, 7), torch.randn(2, 256, 7, 7))
h, s = fo.draw_hashes(512, 4096, order=4, seed=0)
features = fo.kernel_pooling(torch.randn(2, 49, 512), h, s, torch.ones(5), 4096)

emb = torch.randn(64, 16, requires_grad=True)
emb_labels = torch.randint(0, 8, (64,))
loss = fo.triplet_margin_loss(emb, emb_labels, margin=0.2)
loss = fo.triplet_margin_loss(emb, emb_labels, negatives="semihard", positive_fraction=0.6)
a, p, n = fo.mine_triplets(emb, emb_labels, negatives="hardest")
per_anchor: torch.Tensor = fo.count_triplets(emb, emb_labels)
a, p, n = fo.mine_triplets(emb, emb_labels, max_triplets=10_000,
                           generator=torch.Generator().manual_seed(0))
a, p, n = fo.mine_from_bank(emb, emb_labels, emb.detach(), emb_labels, per_anchor=10)
loss = TripletMarginLoss(distributed=False)(emb, emb_labels)
loss = TripletAnchorPointLoss(8, dim=16, anchors_per_class=3, omega=0.1)(emb, emb_labels)
descriptors: torch.Tensor = GeM(p=3.0)(torch.randn(2, 512, 7, 7))

model = torch.nn.Linear(16, 8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loader = [(emb.detach(), emb_labels)]
history = train.fit(model, torch.nn.functional.cross_entropy, loader, optimizer, epochs=1,
                    amp="bf16", grad_clip=1.0, checkpoint="run.pt",
                    eval_fn=lambda m: {"accuracy": 1.0})
last_loss: float = history[-1]["loss"]
extracted, extracted_labels = train.extract_features(model, loader, output=None)
