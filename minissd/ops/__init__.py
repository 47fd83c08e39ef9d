"""Pure forward/backward function pairs: X_forward(...) -> (out, cache), X_backward(dout, cache)."""
