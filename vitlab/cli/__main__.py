"""``python -m vitlab.cli``: the same as the ``vitlab`` command."""

from vitlab.cli.app import main

if __name__ == "__main__":
    main()
