"""`python -m tuneloop ...`: the same CLI as the `tuneloop` command."""

from tuneloop.cli import main

if __name__ == "__main__":
    main(prog_name="tuneloop")
