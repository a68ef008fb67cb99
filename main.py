from aicore.cli import main
from aicore.gc_policy import command_process

if __name__ == "__main__":
    with command_process():  # aicore/gc_policy.py: the collector tuned for a one-run process
        main()
