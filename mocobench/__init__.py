"""mocobench: MoCo v1/v2 pretraining and transfer benchmarks for ResNets.

Importing this package is cheap: it pulls in neither detectron2 nor the training engine.
"""

__version__ = "0.1.0"
