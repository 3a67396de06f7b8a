"""What a model is and how it is made: the architecture, its file format, the Max-of-K loss,
seeds, and training (one model at a time or many at once). Imports nothing above this layer."""
