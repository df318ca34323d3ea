"""`renderocc fit`: optimise a free voxel grid per keyframe against its own labels (no network).

How much of a scene do the 2D labels determine? A network's error mixes what the labels say with
what the network failed to learn; a free grid fitted with the training losses and label rays
separates the two: what it cannot recover, no network trained on these labels is told.
"""
