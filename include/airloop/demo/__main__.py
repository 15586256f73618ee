"""``python -m airloop.demo``: the demo as a program (see :mod:`airloop.demo`)."""

from airloop.demo.signals import stop_early

if __name__ == "__main__":
    stop_early()  # before the imports below, which take seconds
    from airloop.demo.cli import main

    raise SystemExit(main())
