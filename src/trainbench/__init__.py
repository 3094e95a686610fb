"""trainbench: reproduce and extend the Llama 3.1 training-performance recipe."""

__version__ = "0.1.0"
