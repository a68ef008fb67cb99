from aicore.cli import entry

if __name__ == "__main__":
    entry()  # main() with the collector tuned for a one-run process (aicore/gc_policy.py)
