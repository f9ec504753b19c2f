from iscsifs.cli.main import main

raise SystemExit(main())
