from hoshikage.cli import main

raise SystemExit(main())
