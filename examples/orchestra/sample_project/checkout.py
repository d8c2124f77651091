"""The checkout: calc and text together (its tests are the integration tests)."""

from calc import add, discount
from text import price_label

__test_kind__ = "integration"


def total(prices, percent=0):
    """The label of the total of ``prices`` after a discount.

    >>> total([10, 20.5])
    '$30.50'
    >>> total([100, 100], percent=10)
    '$180.00'
    """
    amount = 0
    for price in prices:
        amount = add(amount, price)
    return price_label(discount(amount, percent))


def receipt(items):
    """One line per (name, price), then the total.

    >>> receipt([("tea", 3), ("cake", 4.5)])
    ['tea: $3.00', 'cake: $4.50', 'total: $7.50']
    """
    lines = [f"{name}: {price_label(price)}" for name, price in items]
    return lines + [f"total: {total([price for _, price in items])}"]
