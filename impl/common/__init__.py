"""The building blocks every NumPy model here is made of, each the twin of a torch or transformers piece.

Reading order: nn.py (the module tree, official paths, the tap a checker listens on), functional.py
(activations, norms, softmax, padding, convolutions), layers.py (Linear, Embedding, norms, activations,
the SwiGLU MLP, convolutions), rope.py (rotary embeddings, plain and multimodal), attention.py (KV
cache, causal and sliding-window masks, attention, the Qwen3-family attention module), transformer.py
(the pre-norm decoder layer and stack), generation.py (transformers' generate), weights.py (safetensors
and the one rule for missing and unused weights), config.py (typed configs from config.json).
"""
