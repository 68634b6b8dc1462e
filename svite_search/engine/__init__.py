"""The sparse-training engine: pure torch + timm, usable from any training loop.

* :mod:`svite_search.engine.sparse`: SViTE, unstructured dynamic sparsity (masks, ERK, schedules).
* :mod:`svite_search.engine.structured`: S²ViTE, head and neuron sparsity, and physical slimming.
* :mod:`svite_search.engine.tokens`: SViTE+, the learnable top-k token selector.
* :mod:`svite_search.engine.base`: :class:`Sparsifier`, the protocol all of them follow.

Every engine component is a :class:`Sparsifier`, modelled on ``torch.ao.pruning`` sparsifiers:
construct it with the model (and optimizer), call ``step()`` after every ``optimizer.step()``,
save/restore it with ``state_dict()`` / ``load_state_dict()``, log ``stats()``; the optional
read-outs (``apply_masks``, ``layer_densities``, ``structure``, ``needs_eager_step``) answer
``None``, ``False`` or nothing where they do not apply. The algorithms, and where they depart
from the authors' code, are described in ``docs/METHOD.md``.

Ordering rules. A training loop that drives the engine keeps this order; the harness's
:meth:`svite_search.train.Trainer.train_step` is the one place that implements it.

1. Install the token selector (:func:`~svite_search.engine.tokens.install_token_selector`)
   before building the optimizer, so the optimizer holds (and trains) its scorer, and before
   SViTE / S²ViTE, which then find the scorer outside their targets.
2. Build SViTE / S²ViTE after the optimizer, with it: they reset the optimizer state (Adam
   moments) of the weights they mask and grow. Both refuse, with a ``ValueError``, an optimizer
   that does not hold their weights or the scorer of a selector installed after it.
3. Each iteration: forward (under autocast), ``optimizer.zero_grad()``, backward; under fp16
   AMP, ``scaler.unscale_(optimizer)`` next, so that gradient clipping and the engine read true
   gradients; then the optimizer step (``scaler.step`` + ``scaler.update`` under fp16).
4. The engine's ``step()`` after the optimizer step and before the next ``zero_grad``: the
   topology updates read the dense gradients still in ``.grad``. When the scaler skipped the
   optimizer step (an fp16 overflow), skip the engine's step too: the engine only ever reads
   finite gradients of a step that happened.
5. Under ``torch.compile``, run the eager model on an iteration where any component's
   ``needs_eager_step()`` is true (S²ViTE's score capture hooks run from Python).

Example::

    import torch
    from timm.models.vision_transformer import VisionTransformer
    from svite_search.engine.sparse import SViTE, SViTEConfig
    from svite_search.engine.tokens import TokenTemperature, install_token_selector

    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=4)
    selector = install_token_selector(model, keep_ratio=0.5)                 # rule 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    components = [SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=4, update_interval=2)),
                  TokenTemperature(selector, total_steps=4)]                  # rule 2
    for _ in range(4):
        images, targets = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()                                                       # rule 3
        optimizer.step()
        for component in components:                                          # rule 4
            component.step()
    assert components[0].stats()["updates"] == 1.0 and components[1].layer_densities() is None
"""
from .base import Sparsifier

__all__ = ["Sparsifier"]
