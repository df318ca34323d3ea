"""The occupancy network: ResNet image encoder, LSS view transform, 3D encoder, heads."""

from renderocc.model.net import OccupancyNet

__all__ = ["OccupancyNet"]
