"""``python -m vitlab.cli``: the same as the ``vitlab`` command."""

from vitlab.cli import main

if __name__ == "__main__":
    main()
