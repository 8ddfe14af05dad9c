"""Constrained decoding beside the sampler: a grammar backend compiles a request's constraint, a
matcher per sequence follows its tokens, and each step its bitmask of allowed tokens masks the
row's logits (interface.py; llguidance is the backend, bitmask.py applies the masks)."""
