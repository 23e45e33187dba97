"""fabpass: badge access control for Fab Lab machines."""

__version__ = "0.1.0"
