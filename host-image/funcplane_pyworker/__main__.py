"""``python -m funcplane_pyworker --host H --port P ...``"""

from funcplane_pyworker.main import main

raise SystemExit(main())
