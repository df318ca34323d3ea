"""The occupancy network: ResNet image encoder, LSS view transform, 3D encoder, heads."""

from renderocc.model.net import OccupancyNet, OccupancyOutput

__all__ = ["OccupancyNet", "OccupancyOutput"]
