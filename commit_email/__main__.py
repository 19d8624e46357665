from .cli import main

# Guarded: worker processes (``run`` with several mailboxes) are started with "spawn", which
# imports this module again in each child, where it must not run the command a second time.
if __name__ == "__main__":
    raise SystemExit(main())
