"""renderocc: learn 3D semantic occupancy from 2D rendering supervision."""

__version__ = "0.1.0"
