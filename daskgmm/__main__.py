"""``python -m daskgmm``: the ``daskgmm`` command."""

from daskgmm.cli import console

if __name__ == "__main__":
    console()
