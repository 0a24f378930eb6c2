import sys

from ablation.tracking.replay import main

sys.exit(main())
