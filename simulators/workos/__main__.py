from simulators.workos.cli import main

raise SystemExit(main())
