"""Architecture design as a Gymnasium environment (Zoph & Le, ICLR 2017).

Importing this package registers the environment ids (``NAS-CIFAR10-v0``, ``NAS-Bench-201-v0``).
"""

__version__ = "0.1.0"
