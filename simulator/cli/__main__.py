"""``python -m simulator.cli``: the ``fleetsim`` command line."""

from simulator.cli import app

if __name__ == "__main__":  # pragma: no cover
    app()
