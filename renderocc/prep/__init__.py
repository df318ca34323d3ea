"""Dataset preparation: nuScenes reading, LiDAR→camera projection, adjacency, the prep command."""
