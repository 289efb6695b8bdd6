from fusebox.cli import main

raise SystemExit(main())
