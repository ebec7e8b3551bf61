"""``python -m canaryctl``."""

from canaryctl.cli import main

if __name__ == "__main__":
    main()
