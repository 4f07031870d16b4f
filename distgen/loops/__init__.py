"""Training loops, one per training style; the only library code that touches Accelerate."""
