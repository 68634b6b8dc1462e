"""The sparse-training engine: pure torch + timm, usable from any training loop.

* :mod:`svite_search.engine.sparse`: SViTE, unstructured dynamic sparsity (masks, ERK, schedules).
* :mod:`svite_search.engine.structured`: S²ViTE, head and neuron sparsity, and physical slimming.
* :mod:`svite_search.engine.tokens`: SViTE+, the learnable top-k token selector.

Every engine component follows the same small protocol, modelled on ``torch.ao.pruning``
sparsifiers: construct it with the model (and optimizer), call ``step()`` after every
``optimizer.step()``, and save/restore it with ``state_dict()`` / ``load_state_dict()``.
"""
