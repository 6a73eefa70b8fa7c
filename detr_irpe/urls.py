"""Checkpoint locations given as URLs (plain Python: the command line checks them before
torch is imported)."""

URL_SCHEMES = ("http://", "https://")


def is_url(path) -> bool:
    return str(path).startswith(URL_SCHEMES)
