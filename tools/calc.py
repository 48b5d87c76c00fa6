"""Tools of the example agents (agents/calc_agent*.yaml): each is called with the model's
arguments as keyword arguments, and returns a JSON value."""


def add(a: float, b: float) -> float:
    """a + b"""
    return a + b


def multiply(a: float, b: float) -> float:
    """a * b"""
    return a * b
