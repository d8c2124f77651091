"""Arithmetic behind the shop's API. Each function's examples are its specification: the
orchestra derives its tests from them."""

__test_kind__ = "api"


def add(a, b):
    """The sum of a and b.

    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    """
    return a + b


def mul(a, b):
    """The product of a and b.

    >>> mul(4, 5)
    20
    """
    return a * b


def div(a, b):
    """a divided by b.

    >>> div(6, 3)
    2.0
    >>> div(7, 2)
    3.5
    """
    return a // b  # a bug the orchestra finds: floor division


def discount(price, percent):
    """The price after a discount of ``percent`` per cent, rounded to cents.

    >>> discount(80.0, 25)
    60.0
    >>> discount(19.99, 0)
    19.99
    """
    if percent < 0 or percent > 100:
        raise ValueError("percent must be between 0 and 100")
    return round(price * (100 - percent) / 100, 2)
