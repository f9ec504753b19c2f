from iscsifs.cli.commands import main

raise SystemExit(main())
