from fusebox.cli import main

# guarded: worker processes started with multiprocessing's "spawn" (the fleet
# simulator's) import this module again as __mp_main__ and must not run the CLI
if __name__ == "__main__":
    raise SystemExit(main())
