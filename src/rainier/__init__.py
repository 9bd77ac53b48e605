"""rainier: an open-source AI compute cloud you run yourself."""

__version__ = "0.1.0"
