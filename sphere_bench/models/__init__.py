"""Models: exact S²/SO(3) harmonic transforms, S2CNN layers, the S2CNN zoo and the CNN zoo."""
