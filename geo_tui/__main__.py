from geo_tui.cli import main

raise SystemExit(main())
