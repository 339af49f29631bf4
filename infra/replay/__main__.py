from infra.replay.cli import main

raise SystemExit(main())
