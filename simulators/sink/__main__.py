from simulators.sink.api import main

raise SystemExit(main())
