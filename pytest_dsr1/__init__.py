"""pytest-dsr1: the vLLM DeepSeek-R1/V3 recipe as a performance regression suite."""

__version__ = "0.1.0"
