"""recurstudy: reproducible outcome studies of recurrent pain episodes."""

__version__ = "0.1.0"
