"""ASEN_v2: the revised attention structure of ASEN (Ma et al., AAAI 2020 code release; ref. [19]).

Differences from ASEN (model/asen.py), as in the authors' ``ASENet_V2``:
- the attribute enters as a learned 512-d embedding (nn.Embedding) instead of a one-hot vector;
- spatial branch: tanh(BN(conv1x1(psi))); the attention logit is the scaled dot product
  sum_i img_i * tanh(FC(a))_i / sqrt(512) (no 1x1 conv to one channel);
- no final FC: the embedding is the channel-gated c-vector (D = c = 1024 with ResNet-50 layer3,
  128 with the twin profile's plain8), so ``embed_dim`` is ignored. This follows the authors'
  current model.py (HEAD, ``ASENet_V2`` next to ``ConditionalSimNet``): an earlier revision had
  ``feature_fc = Linear(1024, embedding_size)`` after the gate, which their commit c758e23 removed;
- the channel branch keeps ASEN_v2's sizes: ``attr_transform2`` Linear(512, 512) with a bias and
  ``fc1`` (c + 512) -> c / 2 (1536 -> 512); the spatial ``attr_transform1`` has a bias too.
Loss: ASEN's triplet on cosine similarities, margin 0.2. Schedule (the trainer's, params.yaml
``models.asen_v2.lr_schedule``): the Maryeon/asen README's ASEN_v2 recipe, ``main.py --decay_rate 0.9
--step_size 3 --epochs 50`` (x0.9 every 3 epochs), not ``main.py``'s default x0.985 per epoch (ASEN's).
"""

from __future__ import annotations

from model.asen import ASEN
from model.registry import register_model


@register_model("asen_v2")
class ASENv2(ASEN):
    #: the publication and code this model follows (the model card's ``reference``)
    reference = "Ma et al., AAAI 2020, the code release's revised attention; code: github.com/Maryeon/asen (ASENet_V2)"
    attribute_input = "embedding"
    attention_score = "scaled_dot"
    spatial_batch_norm = True
    final_fc = False
