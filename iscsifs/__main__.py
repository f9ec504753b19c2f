from iscsifs.cli import main

raise SystemExit(main())
