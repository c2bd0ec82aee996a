"""The molecule: its graph, the exact map between shapes and model coordinates, the features of
each coordinate, and its stereochemistry."""
