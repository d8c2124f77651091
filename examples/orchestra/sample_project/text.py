"""Text the shop's pages show."""

__test_kind__ = "ui"


def slugify(title):
    """A title as a URL slug.

    >>> slugify("Hello, World")
    'hello-world'
    >>> slugify("  Spaces   everywhere ")
    'spaces-everywhere'
    """
    words = "".join(c if c.isalnum() else " " for c in title.lower()).split()
    return "-".join(words)


def truncate(text, width):
    """``text`` cut to ``width`` characters, with an ellipsis when cut.

    >>> truncate("orchestra", 20)
    'orchestra'
    >>> truncate("orchestration", 8)
    'orchest…'
    """
    if len(text) <= width:
        return text
    return text[:width - 1] + "…"


def price_label(amount):
    """A price as the page shows it.

    >>> price_label(5)
    '$5.00'
    >>> price_label(1234.5)
    '$1,234.50'
    """
    return f"${amount:,.2f}"
